"""Generators train on cached token maps of a frozen tokenizer, through the same loop as the tokenizers."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from minivar import load, recipes
from minivar.__main__ import main
from minivar.models import weights_checksum
from minivar.runs import load_run
from minivar.token_cache import token_dataset
from minivar.train import train
from tests.helpers import QUICK, tiny_raster_config, tiny_train_config


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    cfg = tiny_train_config(tmp_path_factory.mktemp("tok"), max_steps=4, eval_every=100, ckpt_every=100)
    train(cfg, progress=False)
    return cfg.run_dir


def test_token_cache_is_built_once_with_flipped_copies_and_rebuilt_for_a_new_tokenizer(tokenizer_dir, tmp_path):
    tokenizer = load(tokenizer_dir)
    kw = dict(cache_dir=tmp_path / "tokens", progress=False)
    train_tokens = token_dataset(tokenizer, "emoji", "train", **kw)
    test_tokens = token_dataset(tokenizer, "emoji", "test", **kw)
    assert len(train_tokens) == 2 * 3290 and len(test_tokens) == 365  # the train split gains mirror images
    tokens, label = train_tokens[0]
    assert tokens.shape == (16, 16) and tokens.dtype == torch.long and 0 <= tokens.min() and tokens.max() < 32
    images = torch.stack([img for img, _ in [load_dataset_item(0)]])
    assert torch.equal(tokens, tokenizer.encode(images)[0])  # the first training image's tokens ...
    assert torch.equal(train_tokens[3290][0], tokenizer.encode(images.flip(-1))[0])  # ... its mirror's: N later
    cache = tmp_path / "tokens" / "emoji_test_32"
    assert np.load(cache / "codes.npy", mmap_mode="r").dtype == np.int16  # 4x smaller on disk than int64
    assert json.loads((cache / "meta.json").read_text())["complete"]
    stamp = (cache / "codes.npy").stat().st_mtime_ns
    token_dataset(tokenizer, "emoji", "test", **kw)
    assert (cache / "codes.npy").stat().st_mtime_ns == stamp  # reused
    meta = json.loads((cache / "meta.json").read_text())
    (cache / "meta.json").write_text(json.dumps({**meta, "made_by": "another tokenizer"}))
    token_dataset(tokenizer, "emoji", "test", **kw)
    assert json.loads((cache / "meta.json").read_text())["made_by"].startswith(weights_checksum(tokenizer) + ":")
    (cache / "codes.npy").write_bytes(b"garbage")  # a damaged cache is rebuilt, not an error
    assert len(token_dataset(tokenizer, "emoji", "test", **kw)) == 365
    with open(cache / "codes.npy", "r+b") as fh:  # ... and so is a truncated one
        fh.truncate(1000)
    assert torch.equal(token_dataset(tokenizer, "emoji", "test", **kw).all_codes(), test_tokens.all_codes())


class KilledAt(torch.nn.Module):
    """A tokenizer whose machine dies (an exception here) after `batches` calls of encode."""

    def __init__(self, tokenizer, batches):
        super().__init__()
        self.inner, self.batches, self.calls = tokenizer, batches, 0

    def encode(self, images):
        self.calls += 1
        if self.calls > self.batches:
            raise KeyboardInterrupt("killed")
        return self.inner.encode(images)

    def code_format(self):
        return self.inner.code_format()

    @property
    def device(self):
        return self.inner.device


def test_a_killed_token_cache_build_goes_on_from_its_last_chunk(tokenizer_dir, tmp_path, monkeypatch):
    """A build killed midway keeps the chunks it saved, and the next call encodes only the rest: the same rows as
    a build that was never interrupted, read through a memory map."""
    from minivar import token_cache
    tokenizer = load(tokenizer_dir)
    kw = dict(progress=False, flip=True, limit=100, chunk=32, batch_size=16)
    whole = token_dataset(tokenizer, "emoji", "train", cache_dir=tmp_path / "whole", **kw)
    killed = KilledAt(tokenizer, batches=2 * 5)  # encode + its mirror per batch of 16: killed in the 6th batch
    monkeypatch.setattr(token_cache, "weights_checksum", lambda model: "the same weights")
    with pytest.raises(KeyboardInterrupt):
        token_dataset(killed, "emoji", "train", cache_dir=tmp_path / "resumed", **kw)
    meta = json.loads((tmp_path / "resumed" / "emoji_train_32_flip_n100" / "meta.json").read_text())
    assert meta["done"] == 64 and not meta["complete"]  # two chunks of 32 saved; the 5th batch's 16 were not
    finisher = KilledAt(tokenizer, batches=10**6)
    resumed = token_dataset(finisher, "emoji", "train", cache_dir=tmp_path / "resumed", **kw)
    assert finisher.calls == 2 * 3  # images 64..99: three batches (and their mirrors), not the whole set again
    assert isinstance(resumed.codes, np.memmap) and len(resumed) == 200
    assert torch.equal(resumed.all_codes(), whole.all_codes()) and torch.equal(resumed.labels, whole.labels)
    x, y = next(iter(DataLoader(resumed, batch_size=8, shuffle=True)))  # batches read through the map
    assert x.shape == (8, 16, 16) and x.dtype == torch.long and y.shape == (8,)


def load_dataset_item(i):
    from minivar.data import load_dataset
    return load_dataset("emoji", "train")[i]


def test_float_codes_are_cached_as_floats(tmp_path):
    """Continuous tokenizers (FlowAR's) produce latents: the cache keeps their dtype."""
    from minivar.token_cache import encode_dataset

    class Latents(torch.nn.Module):  # the part of a tokenizer the cache uses: encode and a device
        device = torch.device("cpu")

        def encode(self, images):
            return images[:, :2, ::4, ::4] * 0.5  # (B, 2, 8, 8) floats

    data = torch.utils.data.TensorDataset(torch.rand(6, 3, 32, 32), torch.arange(6))
    codes, labels = encode_dataset(Latents(), data, flip=True, progress=False)
    assert codes.dtype == torch.float32 and codes.shape == (12, 2, 8, 8) and labels.tolist() == [0, 1, 2, 3, 4, 5] * 2
    torch.testing.assert_close(codes[7], data[1][0].flip(-1)[:2, ::4, ::4] * 0.5)


def test_a_tiny_raster_model_learns_writes_samples_and_resumes(tmp_path, tokenizer_dir):
    cfg = tiny_raster_config(tmp_path, tokenizer_dir, max_steps=30)
    result = train(cfg, progress=False)
    records = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    first = sum(r["loss"] for r in records[:3]) / 3
    last = sum(r["loss"] for r in records[-3:]) / 3
    assert last < first - 0.3, (first, last)  # from ln 32 = 3.47 towards the tokens' entropy
    assert result["test_loss"] < first
    for f in ("ckpt.pt", "preview.png", "loss.png", "result.json"):
        assert (cfg.run_dir / f).exists(), f
    longer = tiny_raster_config(tmp_path, tokenizer_dir, max_steps=35)
    assert train(longer, resume=True, progress=False)["step"] == 35
    model, saved, tokenizer = load_run(cfg.run_dir)
    assert saved.model == "raster" and model.generate(torch.tensor([0]), guidance=1.5).shape == (1, 16, 16)
    assert tokenizer.cfg.codebook_size == 32


def test_cli_sample_writes_a_grid(tmp_path, tokenizer_dir, capsys):
    cfg = tiny_raster_config(tmp_path, tokenizer_dir, max_steps=2)
    train(cfg, progress=False)
    out = tmp_path / "grid.png"
    assert main(["sample", str(cfg.run_dir), "--n", "9", "--guidance", "1.5", "--top-k", "8", "--out", str(out)]) == 0
    assert out.exists() and "9 of 9 samples" in capsys.readouterr().out
    assert main(["sample", str(cfg.run_dir), "--n", "30", "--fd", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    found = re.search(r"= ([\d.]+)  \(95% bootstrap interval ([\d.-]+) - ([\d.]+)\)", printed)
    fd, low, high = map(float, found.groups())
    assert "labels follow the test split" in printed and low < fd < high
    assert main(["sample", str(tokenizer_dir)]) == 2
    assert "not a generator" in capsys.readouterr().err


def test_sample_compiles_by_itself_only_where_the_record_says_it_pays(tmp_path, tokenizer_dir, capsys, monkeypatch):
    """Without --compile, `sample` compiles when its samples outnumber the recorded break-even (here made 5 so that
    9 samples pay), says so, and draws the same picture under the same name as --no-compile; below it, it does not."""
    from minivar import sampling
    monkeypatch.setattr(sampling.CompiledStep, "backend", "eager")  # dynamo traces, no code generated: seconds
    monkeypatch.setattr(sampling, "COMPILE_PAYS_AFTER", {"raster": {1: 5, 64: 5}})
    cfg = tiny_raster_config(tmp_path, tokenizer_dir, max_steps=2)
    train(cfg, progress=False)
    pictures = {}
    for flags in ([], ["--no-compile"]):
        assert main(["sample", str(cfg.run_dir), "--n", "9", "--seed", "3", *flags]) == 0
        printed = capsys.readouterr().out
        assert ("compiling the sampling step" in printed) == (not flags)
        written = re.search(r"wrote (\S+\.png)", printed).group(1)
        pictures[tuple(flags)] = (Path(written).name, Path(written).read_bytes())
    assert pictures[()] == pictures[("--no-compile",)]
    assert main(["sample", str(cfg.run_dir), "--n", "4"]) == 0  # 4 < 5: eager, nothing said
    assert "compiling the sampling step" not in capsys.readouterr().out


def test_generator_errors_name_the_fix(tmp_path, tokenizer_dir):
    with pytest.raises(ValueError, match="set tokenizer"):
        tiny_raster_config(tmp_path, tokenizer_dir, tokenizer="")
    with pytest.raises(FileNotFoundError, match="python -m minivar train emoji-vqvae-l2"):
        train(recipes.get("emoji-raster", [f"out_dir={tmp_path}", f"tokenizer={tmp_path}/emoji-vqvae-l2"]),
              progress=False)
    cfg = tiny_raster_config(tmp_path, tokenizer_dir)
    cfg.model_config.codebook_size = 64
    with pytest.raises(ValueError, match="--set codebook_size=32 "):
        train(cfg, progress=False)
    cfg = tiny_raster_config(tmp_path, tokenizer_dir)
    cfg.model_config.grid = 8
    with pytest.raises(ValueError, match="--set grid=16 "):
        train(cfg, progress=False)
    cfg = tiny_raster_config(tmp_path, tokenizer_dir)
    cfg.model_config.num_classes = 4
    with pytest.raises(ValueError, match="--set num_classes=9"):
        train(cfg, progress=False)


def test_load_run_finds_the_tokenizer_from_another_working_directory(tmp_path, tokenizer_dir, monkeypatch):
    """Runs store the tokenizer path as given (relative to where training ran); a notebook one folder down
    must still find it."""
    import shutil
    root = tmp_path / "project"
    shutil.copytree(tokenizer_dir, root / "runs" / "tok")
    monkeypatch.chdir(root)
    cfg = tiny_raster_config("runs", "runs/tok", max_steps=1)
    train(cfg, progress=False)
    (root / "notebooks").mkdir()
    monkeypatch.chdir(root / "notebooks")
    model, saved, tokenizer = load_run("../runs/tiny-raster")
    assert saved.tokenizer == "runs/tok" and tokenizer.cfg.codebook_size == 32


def test_var_trains_on_a_multiscale_tokenizer_through_the_same_loop(tmp_path):
    from minivar.msvq import MultiScaleVQVAEConfig
    from minivar.train import TrainConfig
    from minivar.var import VARConfig
    tok_cfg = TrainConfig(name="ms", model="msvqvae", out_dir=str(tmp_path), batch_size=16, max_steps=3,
                          eval_every=100, ckpt_every=100, eval_batches=1, **QUICK,
                          model_config=MultiScaleVQVAEConfig(image_size=32, ch=8, ch_mult=(1, 2), z_channels=8,
                                                             code_dim=4, codebook_size=32, scales=(1, 2, 4, 8, 16)))
    train(tok_cfg, progress=False)
    cfg = TrainConfig(name="var", model="var", tokenizer=str(tok_cfg.run_dir), out_dir=str(tmp_path), batch_size=16,
                      lr=3e-3, warmup_steps=5, max_steps=30, eval_every=15, ckpt_every=15, log_every=1, eval_batches=1,
                      **QUICK, model_config=VARConfig(depth=1, dim=32, n_head=4))  # vocabulary, scales: the tokenizer's
    result = train(cfg, progress=False)
    records = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["loss"] for r in records[-3:]) / 3 < sum(r["loss"] for r in records[:3]) / 3 - 0.3
    assert (cfg.run_dir / "preview.png").exists() and result["test_loss"] < records[0]["loss"]
    assert model_config_of(cfg.run_dir)["scales"] == [1, 2, 4, 8, 16]  # read from the tokenizer, kept in the run
    model, _, tokenizer = load_run(cfg.run_dir)  # the tokenizer comes bound
    maps = model.generate(torch.tensor([0, 1]), guidance=1.5)
    assert [m.shape[1:] for m in maps] == [(1, 1), (2, 2), (4, 4), (8, 8), (16, 16)]
    assert tokenizer.decode_scales(maps).shape == (2, 3, 32, 32)
    wrong = TrainConfig(**{**cfg.to_dict(), "name": "wrong", "model_config": {**cfg.to_dict()["model_config"],
                                                                               "scales": (1, 4, 16)}})
    assert wrong.model_config.scales == (1, 4, 16)
    with pytest.raises(ValueError, match="--set scales=1,2,4,8,16"):
        train(wrong, progress=False)


@pytest.mark.slow
def test_the_demo_trains_from_scratch_or_over_the_shipped_tokenizer_and_draws_beside_the_shipped_var(
        tmp_path, capsys, monkeypatch):
    from minivar import checkpoint, pretrained
    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", tmp_path / "weights")  # nothing shipped yet
    out = tmp_path / "demo"
    tiny = ["--minutes", "0.06", "--out", str(out), "--fd", "30", "--set", "data_limit=256", "--set", "dim=32",
            "--set", "depth=1"]
    args = ["demo", "--from-scratch", *tiny, "--set-tokenizer", "ch=8", "--set-tokenizer", "z_channels=8",
            "--set-tokenizer", "data_limit=256"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert (out / "scales.png").exists() and len(list((out / "classes").glob("*.png"))) == 9
    assert "wall time" in text and "peak memory" in text and "fd_emoji of 30 samples" in text
    assert "right: the shipped VAR" not in text
    record = json.loads((out / "demo.json").read_text())  # what the run measured, for the record
    assert record["samples"] == 30 and record["fd_emoji_ci95"][0] <= record["fd_emoji"] <= record["fd_emoji_ci95"][1]
    assert record["var_sets"][-2:] == ["dim=32", "depth=1"] and record["var_steps"] > 0
    assert (record["guidance"], record["top_p"]) == (4.0, 0.8)  # the defaults sheet 05c chose
    assert record["command"] == "python -m minivar " + " ".join(args)  # the command given, not the test runner's
    steps = json.loads((out / "var-scratch" / "result.json").read_text())["step"]
    assert main(args) == 0  # a second run continues the finished runs: nothing more to train
    assert json.loads((out / "var-scratch" / "result.json").read_text())["step"] == steps
    capsys.readouterr()

    # Ship those two as the course's emoji-msvq and emoji-var: the default demo now trains only a VAR, over the
    # shipped tokenizer, and draws the shipped VAR's scales beside its own.
    pretrained.export(out / "tokenizer", "emoji-msvq", command="python -m minivar train emoji-msvq")
    pretrained.export(out / "var-scratch", "emoji-var", command="python -m minivar train emoji-var",
                      tokenizer="emoji-msvq", n=20)
    assert main(["demo", *tiny]) == 0
    text = capsys.readouterr().out
    assert "the shipped multi-scale tokenizer" in text and "right: the shipped VAR, same seed" in text
    assert "the shipped VAR: " in text and not (out / "var" / "tokens").exists()
    assert json.loads((out / "var" / "config.json").read_text())["tokenizer"] == "pretrained:emoji-msvq"
    assert (out / "tokens" / "emoji-msvq").is_dir()
    assert main(["demo", *tiny, "--set-tokenizer", "ch=8"]) != 0
    assert "--set-tokenizer changes the tokenizer the demo trains; add --from-scratch" in capsys.readouterr().err
    before = (out / "demo.json").stat().st_mtime_ns
    assert main(["demo", *tiny, "--top-p", "1.5"]) != 0  # refused before any training
    assert "top_p must lie in (0, 1]" in capsys.readouterr().err and (out / "demo.json").stat().st_mtime_ns == before


def model_config_of(run_dir):
    return json.loads((run_dir / "config.json").read_text())["model_config"]
