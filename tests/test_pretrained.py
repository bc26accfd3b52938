"""Shipped checkpoints: exported from a run in half precision with a manifest, checked by sha256 at every load,
loadable as "pretrained:NAME" wherever a run folder is taken (load, sample, a generator's tokenizer)."""

import json

import pytest
import torch

import minivar
from minivar import checkpoint, pretrained
from minivar.__main__ import main
from minivar.checkpoint import CheckpointError
from minivar.models import Generator, Tokenizer
from minivar.runs import load_run
from minivar.train import train
from tests.helpers import tiny_raster_config, tiny_train_config

MANIFEST_KEYS = {"name", "kind", "file", "sha256", "bytes", "parameters", "command", "tokenizer", "steps", "minutes",
                 "machine", "torch", "date", "metrics", "measure_command"}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A tiny tokenizer and a raster generator trained on it, both exported into a private weights folder."""
    runs = tmp_path_factory.mktemp("runs")
    folder = tmp_path_factory.mktemp("weights")
    tok_cfg = tiny_train_config(runs, max_steps=4, eval_every=100, ckpt_every=100)
    train(tok_cfg, progress=False)
    gen_cfg = tiny_raster_config(runs, tok_cfg.run_dir, max_steps=6, eval_every=100, ckpt_every=100)
    train(gen_cfg, progress=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checkpoint, "SHIPPED_DIR", folder)
        tok_info = pretrained.export(tok_cfg.run_dir, "tok", command="python -m minivar train tiny")
        gen_info = pretrained.export(gen_cfg.run_dir, "gen", command="python -m minivar train tiny-raster",
                                     tokenizer="tok", n=40, guidance=1.5)
    return {"folder": folder, "runs": runs, "tok_run": tok_cfg.run_dir, "gen_run": gen_cfg.run_dir,
            "tok_info": tok_info, "gen_info": gen_info}


@pytest.fixture
def weights(shipped, monkeypatch):
    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", shipped["folder"])
    return shipped


def test_export_writes_half_precision_weights_and_a_manifest_that_measures_them(weights):
    folder = weights["folder"]
    assert pretrained.available() == ["gen", "tok"]
    for name, info in (("tok", weights["tok_info"]), ("gen", weights["gen_info"])):
        manifest = json.loads((folder / f"{name}.json").read_text())
        assert manifest == info and MANIFEST_KEYS <= set(manifest)
        assert manifest["bytes"] == (folder / f"{name}.pt").stat().st_size
        saved = torch.load(folder / f"{name}.pt", weights_only=True)
        floats = [v.dtype for v in saved["model"].values() if v.is_floating_point()]
        assert floats and set(floats) == {torch.float16}, set(floats)
    tok_metrics, gen_metrics = weights["tok_info"]["metrics"], weights["gen_info"]["metrics"]
    assert 5 < tok_metrics["psnr"] < 60 and 0 < tok_metrics["usage"] <= 1
    low, high = gen_metrics["fd_emoji_ci95"]
    assert low <= gen_metrics["fd_emoji"] <= high and gen_metrics["samples"] == 40 and gen_metrics["guidance"] == 1.5
    assert 0 <= gen_metrics["precision"] <= 1 and 0 <= gen_metrics["recall"] <= 1
    assert weights["gen_info"]["tokenizer"] == "pretrained:tok" and weights["tok_info"]["tokenizer"] is None
    assert weights["gen_info"]["measure_command"] == \
        "python -m minivar sample pretrained:gen --n 40 --fd --guidance 1.5"


def test_the_training_log_ships_and_load_or_train_loads_or_trains(weights, tmp_path, monkeypatch):
    from minivar.checkpoint import read_log
    log = pretrained.training_log("gen")
    assert log and log == read_log(weights["gen_run"] / "metrics.jsonl")
    assert weights["gen_info"]["log"] == "gen.metrics.jsonl"
    monkeypatch.setenv("MINIVAR_SMOKE", "0")
    model, records, where = pretrained.load_or_train("gen")
    assert isinstance(model, Generator) and records == log and where == "pretrained:gen"
    final, run = pretrained.run_result(where), json.loads((weights["gen_run"] / "result.json").read_text())
    assert final["step"] == run["step"] == 6 and final["test_loss"] == pytest.approx(run["test_loss"], abs=1e-4)
    assert final["elapsed"] == pytest.approx(run["elapsed"], abs=4)  # the manifest keeps minutes to 0.1
    monkeypatch.chdir(tmp_path)  # train=True: a run of the recipe here (tiny sizes, as a smoke run would set)
    sets = ["out_dir=runs", "ch=8", "z_channels=8", "ch_mult=1,2", "codebook_size=32", "code_dim=8", "batch_size=8",
            "log_every=1"]  # a loaded machine may fit only a few steps into the 1.2 s budget: log every one
    model, records, where = pretrained.load_or_train("emoji-vqvae", train=True, minutes=0.02, sets=sets)
    assert isinstance(model, Tokenizer) and not model.training and records[-1]["step"] >= 1
    assert where == "runs/emoji-vqvae-here"
    from minivar.checkpoint import load_checkpoint
    assert pretrained.run_result(where)["step"] == load_checkpoint(tmp_path / where / "ckpt.pt")["step"] >= 1
    assert (tmp_path / "runs" / "emoji-vqvae-here" / "ckpt.pt").is_file()
    import shutil
    shutil.copytree(weights["folder"], tmp_path / "weights")
    shutil.copy(tmp_path / "weights" / "tok.json", tmp_path / "weights" / "emoji-vqvae.json")  # "ships" emoji-vqvae
    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", tmp_path / "weights")
    assert isinstance(pretrained.load_or_train("emoji-vqvae")[0], Tokenizer)
    assert pretrained.load_or_train("emoji-vqvae", name="tok")[2] == "pretrained:tok"  # a variant ships as NAME
    assert pretrained.load_or_train("emoji-vqvae", True, 0.02, sets, name="tok")[2] == "runs/tok-here"
    monkeypatch.setenv("MINIVAR_SMOKE", "1")  # smoke runs (CI) train, even where a shipped model exists
    pretrained.load_or_train("emoji-vqvae", minutes=0.02, sets=sets)
    assert (tmp_path / "runs" / "emoji-vqvae-smoke" / "ckpt.pt").is_file()


def test_shipped_models_equal_their_runs_rounded_to_half_precision(weights):
    run_gen, _, run_tok = load_run(weights["gen_run"])
    gen = pretrained.load("gen")
    assert isinstance(gen, Generator) and isinstance(gen.tokenizer, Tokenizer) and not gen.training
    assert isinstance(minivar.load("pretrained:tok"), Tokenizer)  # the package's load takes the same names
    for ours, theirs in ((gen, run_gen), (gen.tokenizer, run_tok)):
        mine, ref = ours.state_dict(), theirs.state_dict()
        assert mine.keys() == ref.keys()
        for k in ref:
            assert mine[k].dtype == ref[k].dtype, k  # float32 again once loaded
            expected = ref[k].half().float() if k in dict(theirs.named_parameters()) else ref[k]
            assert torch.equal(mine[k], expected), k
    labels = torch.arange(3)
    a = gen.generate(labels, generator=torch.Generator().manual_seed(0))
    b = gen.generate(labels, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (3, 16, 16)


def test_a_damaged_or_missing_shipped_file_is_refused_with_the_way_out(weights, tmp_path, monkeypatch):
    import shutil
    folder = tmp_path / "weights"
    shutil.copytree(weights["folder"], folder)
    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", folder)
    data = bytearray((folder / "tok.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "tok.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its manifest.*git checkout"):
        pretrained.load("tok")
    with pytest.raises(CheckpointError, match="does not match its manifest"):
        pretrained.load("gen")  # its tokenizer is the damaged file
    (folder / "gen.pt").unlink()
    with pytest.raises(FileNotFoundError, match="gen.pt is missing.*reinstall"):
        pretrained.load("gen")
    with pytest.raises(FileNotFoundError, match=r"no shipped checkpoint named 'emoji-nothing'; the shipped ones: gen"):
        minivar.load("pretrained:emoji-nothing")
    (folder / "tok.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="manifest .* is damaged"):
        pretrained.manifest("tok")


def test_export_refuses_a_generator_whose_tokenizer_is_not_shipped_or_another(weights, tmp_path, monkeypatch):
    import shutil
    shutil.copytree(weights["folder"], tmp_path / "weights")
    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", tmp_path / "weights")
    with pytest.raises(ValueError, match="ship its tokenizer first"):
        pretrained.export(weights["gen_run"], "gen2", command="x")
    other = tiny_train_config(tmp_path, max_steps=2, eval_every=100, ckpt_every=100, seed=1)
    train(other, progress=False)
    pretrained.export(other.run_dir, "tok-other", command="x")
    with pytest.raises(ValueError, match="not the one .* was trained on"):
        pretrained.export(weights["gen_run"], "gen2", command="x", tokenizer="tok-other")


def test_sample_and_train_take_pretrained_names(weights, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["sample", "pretrained:gen", "--n", "3"])
    assert (tmp_path / "runs" / "pretrained" / "gen" / "samples_guidance2_seed0_n3.png").is_file()  # not in the package
    assert "wrote runs/pretrained/gen/samples_guidance2_seed0_n3.png: 3 of 3 samples" in capsys.readouterr().out
    cfg = tiny_raster_config(tmp_path / "runs", "pretrained:tok", name="over-shipped", max_steps=3)
    train(cfg, progress=False)
    assert (tmp_path / "runs" / "tokens" / "tok" / "emoji_test_32_n256" / "codes.npy").is_file()  # under out_dir
    model, loaded_cfg, tokenizer = load_run(cfg.run_dir)
    assert loaded_cfg.tokenizer == "pretrained:tok" and isinstance(tokenizer, Tokenizer)
    assert not list(weights["folder"].glob("tokens*"))


def test_sample_images_draws_in_batches_and_checks_its_batch_size(weights):
    gen = pretrained.load("gen")
    images = gen.sample_images(torch.tensor([0, 1, 2, 3, 4]), batch_size=2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (5, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1"):
        gen.sample_images(torch.tensor([0]), batch_size=0)
    with pytest.raises(ValueError, match="labels must lie in"):
        gen.sample_images(torch.tensor([99]))


def test_the_shipped_checkpoints_are_whole_small_and_load():
    """The real ones in minivar/weights/: every manifest's file is there and intact, a generator's tokenizer is
    shipped too, and all of them together stay under the 40 MB the repository can carry."""
    names = pretrained.available()
    total = 0
    for name in names:
        info = pretrained.manifest(name)
        assert MANIFEST_KEYS <= set(info), (name, MANIFEST_KEYS - set(info))
        assert info["command"].startswith("python -m minivar train"), name
        if info["tokenizer"]:
            assert info["tokenizer"].removeprefix("pretrained:") in names, name
        model = pretrained.load(name)
        assert sum(p.numel() for p in model.parameters()) == info["parameters"]
        total += info["bytes"]
    assert total <= 50e6, f"{total / 1e6:.1f} MB of shipped weights (the budget: 50 MB in all, half precision)"


@pytest.mark.parametrize("name, n_frames", [("emoji-raster", 8), ("emoji-rar", 8), ("emoji-var", 6),
                                            ("emoji-flowar", 3 + 4)])
def test_generation_frames_end_on_the_sample_the_generator_draws(name, n_frames):
    from minivar.viz import generation_frames
    model = pretrained.load(name).eval()
    frames = generation_frames(model, 2, seed=3)
    assert len(frames) == n_frames and all(img.shape == (3, 32, 32) for _, img in frames)
    g = torch.Generator().manual_seed(3)
    out = model.generate(torch.tensor([2]), generator=g)
    final = model.tokenizer.decode(out).float()[0]  # (VAR: the list of scales; FlowAR: the last latent)
    assert torch.allclose(frames[-1][1], final, atol=1e-5)  # the last frame is the finished sample
    if name in ("emoji-raster", "emoji-rar"):  # earlier frames: the same image, the undrawn rows greyed out
        assert torch.equal(frames[3][1][:, :16], final[:, :16]) and (frames[3][1][:, 16:] == 0.6).all()


def test_a_run_another_process_is_training_is_waited_for_then_loaded(tmp_path, capsys):
    """Two notebooks (or test workers) training the same smoke run: the second waits for the first's lock, then
    continues (here: finishes) the run instead of failing."""
    import subprocess
    import sys

    from minivar.pretrained import train_waiting_for_others
    cfg = tiny_train_config(tmp_path, max_steps=2, eval_every=100, ckpt_every=100)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom minivar.files import run_lock\n"
                               "lock = run_lock(sys.argv[1]).__enter__()\nprint('held', flush=True)\ntime.sleep(3)",
                               str(cfg.run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = train_waiting_for_others(cfg, patience_minutes=2)
    finally:
        holder.wait(timeout=60)
    assert result["step"] == 2 and "is in use by process" in capsys.readouterr().out
