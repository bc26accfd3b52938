"""A run stopped any way (an exception, Ctrl-C, SIGTERM, a kill between checkpoints) continues with --resume to
exactly the run it would have been: for every kind of model, bit for bit on the CPU."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minivar.checkpoint import load_checkpoint
from minivar.flowar import FlowARConfig
from minivar.kl_autoencoder import KLAutoencoderConfig
from minivar.maskgit_vq import MaskGITVQConfig
from minivar.msvq import MultiScaleVQVAEConfig
from minivar.rar import RARConfig
from minivar.raster_ar import RasterARConfig
from minivar.train import TrainConfig, train
from minivar.var import VARConfig
from tests.helpers import QUICK, crash_at_call, tiny_train_config

ROOT = Path(__file__).resolve().parents[1]


def configs(root):
    """One tiny run of every model kind; the generators with every dropout they have, so randomness matters."""
    tok = tiny_train_config(root, name="vq", max_steps=3, eval_every=100, ckpt_every=100)
    ms = TrainConfig(name="ms", model="msvqvae", out_dir=str(root), batch_size=16, max_steps=3, eval_every=100,
                     ckpt_every=100, eval_batches=1, **QUICK, model_config=MultiScaleVQVAEConfig(
                         image_size=32, ch=8, ch_mult=(1, 2), z_channels=8, code_dim=4, codebook_size=32,
                         scales=(1, 2, 4, 8, 16)))
    small = dict(out_dir=str(root), batch_size=16, lr=3e-3, warmup_steps=2, max_steps=12, eval_every=6, ckpt_every=5,
                 log_every=1, eval_batches=1, **QUICK)
    raster = TrainConfig(name="raster", model="raster", tokenizer=str(root / "vq"), **small,
                         model_config=RasterARConfig(num_classes=9, dim=32, n_layer=1, n_head=4, multiple_of=16,
                                                     class_dropout=0.2, dropout=0.1, token_dropout=0.1))
    var = TrainConfig(name="var", model="var", tokenizer=str(root / "ms"), **small,
                      model_config=VARConfig(num_classes=9, depth=2, dim=32, n_head=4, class_dropout=0.2,
                                             dropout=0.1, attn_dropout=0.1, drop_path=0.1))
    kl = TrainConfig(name="kl", model="klvae", out_dir=str(root), batch_size=16, max_steps=3, eval_every=100,
                     ckpt_every=100, eval_batches=1, **QUICK, model_config=KLAutoencoderConfig(image_size=32, ch=8,
                                                                                     ch_mult=(1, 2), latent_channels=4))
    flowar = TrainConfig(name="flowar", model="flowar", tokenizer=str(root / "kl"), **small,
                         model_config=FlowARConfig(num_classes=9, dim=32, n_head=2, encoder_depth=1, decoder_depth=1,
                                                   head_width=64, head_depth=1, class_dropout=0.2, dropout=0.1,
                                                   sample_steps=2))
    rar = TrainConfig(name="rar", model="rar", tokenizer=str(root / "vq"), **small,
                      model_config=RARConfig(num_classes=9, dim=32, n_layer=1, n_head=2, class_dropout=0.2,
                                             dropout=0.1, attn_dropout=0.1, anneal_start=0.3, anneal_end=0.7))
    maskgit = TrainConfig(name="maskgitvq", model="maskgitvq", **small, model_config=MaskGITVQConfig(
        image_size=32, ch=32, ch_mult=(1, 2), num_res_blocks=1, code_dim=8, codebook_size=32, dropout=0.1))
    return {"vqvae": (tiny_train_config(root, name="vqvae", max_steps=12, ckpt_every=5, eval_every=6), []),
            "msvqvae": (TrainConfig(**{**ms.to_dict(), "name": "msvqvae", **small}), []),
            "klvae": (TrainConfig(**{**kl.to_dict(), "name": "klvae", **small}), []),
            "raster": (raster, [tok]), "var": (var, [ms]), "flowar": (flowar, [kl]), "rar": (rar, [tok]),
            "maskgitvq": (maskgit, [])}


@pytest.mark.parametrize("kind", ["vqvae", "msvqvae", "klvae", "raster", "var", "flowar", "rar", "maskgitvq"])
def test_killed_and_resumed_equals_uninterrupted(kind, tmp_path, monkeypatch):
    cfg_a, needs = configs(tmp_path / "a")[kind]
    cfg_b, _ = configs(tmp_path / "b")[kind]
    for tok in needs:  # the same tokenizer for both runs: train it once, copy it
        train(tok, progress=False)
        shutil.copytree(tok.run_dir, tmp_path / "b" / tok.name)
    straight = train(cfg_a, progress=False)

    crash_at_call(monkeypatch, 9, RuntimeError("killed"))  # what kill -9 leaves: step 5's checkpoint, nothing after
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg_b, progress=False)
    monkeypatch.undo()
    assert load_checkpoint(Path(cfg_b.run_dir) / "ckpt.pt")["step"] == 5
    resumed = train(cfg_b, resume=True, progress=False)
    for (name, a), b in zip(straight["model"].state_dict().items(), resumed["model"].state_dict().values()):
        assert torch.equal(a, b), f"{kind}: {name} differs after resuming"
    log = [[json.loads(line)["loss"] for line in (Path(c.run_dir) / "metrics.jsonl").read_text().splitlines()]
           for c in (cfg_a, cfg_b)]
    assert log[0] == log[1] and len(log[0]) == 12


def test_a_checkpoint_every_few_minutes_of_wall_time(tmp_path, monkeypatch):
    cfg = tiny_train_config(tmp_path, max_steps=20, ckpt_every=1000, eval_every=1000, ckpt_minutes=1e-9)
    crash_at_call(monkeypatch, 6, RuntimeError("killed"))
    with pytest.raises(RuntimeError):
        train(cfg, progress=False)
    assert load_checkpoint(cfg.run_dir / "ckpt.pt")["step"] == 5  # saved after every step: minutes had passed


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, words", [(signal.SIGTERM, 143, "stopped by SIGTERM"),
                                                 (signal.SIGINT, 130, "interrupted")])
def test_sigterm_and_ctrl_c_save_and_exit_with_one_line(tmp_path, signum, code, words):
    args = [sys.executable, "-m", "minivar", "train", "emoji-vqvae"] + sum(
        (["--set", s] for s in ("ch=8", "ch_mult=1,2", "batch_size=8", "max_steps=100000", "eval_every=100000",
                                "ckpt_every=100000", "log_every=1", f"out_dir={tmp_path}")), [])
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "emoji-vqvae" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err and words in err and "continue with --resume" in err, err[-2000:]
    saved = load_checkpoint(tmp_path / "emoji-vqvae" / "ckpt.pt")["step"]
    logged = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert saved >= 3 and saved >= logged[-1] - 1  # nothing but the step in progress was lost
