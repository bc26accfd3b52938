"""Bad input, one table: each case is what a user might type or call, the exception (or CLI exit code) it must give,
and words of the message that name the problem or the fix. The number of rows is the count of clearly handled
cases the project reports; add a row with every new check."""

import json
import pickle
import re

import pytest
import torch

import minivar
from minivar import recipes
from minivar.__main__ import main
from minivar.autoencoder import VQVAE
from minivar.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minivar.data import load_dataset
from minivar.official import load_llamagen_vq, load_maskgit_vq, load_rar, load_var
from minivar.train import StepBatches, train
from tests.helpers import tiny_generator_runs, tiny_raster_config, tiny_train_config, tiny_vqvae_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny tokenizer runs and generator runs over them: what the CLI cases sample or resume."""
    from minivar.flowar import FlowARConfig
    from minivar.kl_autoencoder import KLAutoencoderConfig
    from minivar.rar import RARConfig
    root = tmp_path_factory.mktemp("runs")
    tok, gen = tiny_generator_runs(root)
    kl = tiny_train_config(root, name="kl", model="klvae", max_steps=2, eval_every=100, ckpt_every=100,
                           model_config=KLAutoencoderConfig(image_size=32, ch=8, ch_mult=(1, 2), latent_channels=4))
    train(kl, progress=False)
    flowar = tiny_train_config(root, name="flowar", model="flowar", tokenizer=str(kl.run_dir), max_steps=2,
                               eval_every=100, model_config=FlowARConfig(dim=32, n_head=2, encoder_depth=1,
                                                                         decoder_depth=1, head_width=64, head_depth=1,
                                                                         sample_steps=2))
    train(flowar, progress=False)
    rar = tiny_train_config(root, name="rar", model="rar", tokenizer=str(tok.run_dir), max_steps=2, eval_every=100,
                            model_config=RARConfig(dim=32, n_head=2, n_layer=1))
    train(rar, progress=False)
    return {"root": root, "tokenizer": tok.run_dir, "raster": gen.run_dir, "flowar": flowar.run_dir,
            "rar": rar.run_dir}


def tiny_vqvae():
    torch.manual_seed(0)
    return VQVAE(tiny_vqvae_config()).eval()


def tiny_raster(runs):
    return minivar.load(runs["raster"])


# ------------------------------------------------------------------------------------- the command line

def train_args(root, *sets, recipe="emoji-vqvae"):
    small = ["ch=8", "ch_mult=1,2", "batch_size=8", "max_steps=1", "eval_batches=1", f"out_dir={root}"]
    return ["train", recipe, *[a for s in small + list(sets) for a in ("--set", s)]]


CLI = [  # (id, argv builder(runs, tmp), message)
    ("unknown recipe", lambda r, t: ["train", "nope"], "unknown recipe 'nope'; choose one of"),
    ("--set without =", lambda r, t: ["train", "emoji-vqvae", "--set", "lr"], "key=value"),
    ("unknown key", lambda r, t: ["train", "emoji-vqvae", "--set", "codebooksize=3"], "valid keys: .*codebook_size"),
    ("wrong type", lambda r, t: ["train", "emoji-vqvae", "--set", "codebook_size=many"], "expects an integer"),
    ("negative max_steps", lambda r, t: train_args(t, "max_steps=-5"), "max_steps must be a whole number >= 0"),
    ("batch_size 0", lambda r, t: train_args(t, "batch_size=0"), "batch_size must be a whole number >= 1"),
    ("negative batch_size", lambda r, t: train_args(t, "batch_size=-3"), "batch_size must be"),
    ("zero learning rate", lambda r, t: train_args(t, "lr=0"), "lr must be a finite number > 0"),
    ("empty run name", lambda r, t: train_args(t, "name="), "name must be a plain folder name"),
    ("run name with a slash", lambda r, t: train_args(t, "name=a/b"), "name must be a plain folder name"),
    ("unknown device", lambda r, t: train_args(t, "device=tpu"), "device must be auto, cpu"),
    ("fractional scales", lambda r, t: ["train", "emoji-msvq", "--set", "scales=1.5,8"], "scales must be whole"),
    ("model of another recipe", lambda r, t: train_args(t, "model=var"), "start from a recipe of that model"),
    ("tokenizer for a tokenizer", lambda r, t: train_args(t, "tokenizer=runs/x"), "leave tokenizer unset"),
    ("out_dir under /proc", lambda r, t: train_args("/proc/minivar-test"), "cannot write the run folder"),
    ("out_dir below a file", lambda r, t: train_args(t / "a-file" / "runs"), "cannot write the run folder"),
    ("missing tokenizer run", lambda r, t: ["train", "emoji-raster", "--set", f"out_dir={t}", "--set",
                                            f"tokenizer={t}/emoji-vqvae-l2"], "train emoji-vqvae-l2"),
    ("run exists, no --resume", lambda r, t: ["train", "emoji-vqvae", "--set", f"out_dir={r['root']}", "--set",
                                              "name=tiny"], "--resume"),
    ("top-p above 1", lambda r, t: ["sample", str(r["raster"]), "--top-p", "1.5"], r"top_p must lie in \(0, 1\]"),
    ("negative top-k", lambda r, t: ["sample", str(r["raster"]), "--top-k", "-3"], "top_k must be a whole number"),
    ("negative guidance", lambda r, t: ["sample", str(r["raster"]), "--guidance", "-1"],
     "guidance must be a finite number"),
    ("negative temperature", lambda r, t: ["sample", str(r["raster"]), "--temperature", "-1"], "temperature"),
    ("classes not numbers", lambda r, t: ["sample", str(r["raster"]), "--classes", "a,b"], "comma-separated"),
    ("class out of range", lambda r, t: ["sample", str(r["raster"]), "--classes", "0,99"], r"\[0, 9\)"),
    ("zero samples", lambda r, t: ["sample", str(r["raster"]), "--n", "0"], "at least 1"),
    ("zero batch size", lambda r, t: ["sample", str(r["raster"]), "--batch-size", "0"], "at least 1"),
    ("unwritable --out", lambda r, t: ["sample", str(r["raster"]), "--out", "/proc/x/grid.png"], "cannot write"),
    ("sample a tokenizer", lambda r, t: ["sample", str(r["tokenizer"])], "not a generator"),
    ("sample a missing run", lambda r, t: ["sample", str(t / "nothing")], "no checkpoint at"),
    ("zero ODE steps", lambda r, t: ["sample", str(r["flowar"]), "--sample-steps", "0"],
     "sample_steps must be a whole number >= 1"),
    ("top-k for FlowAR", lambda r, t: ["sample", str(r["flowar"]), "--top-k", "5"], "flowar model does not take"),
    ("ODE steps for raster", lambda r, t: ["sample", str(r["raster"]), "--sample-steps", "5"],
     "raster model does not take --sample-steps; its sampling options: --guidance, "),
    ("guidance interval past 1", lambda r, t: ["sample", str(r["flowar"]), "--guidance-high", "1.5"],
     r"guidance_high is a time in \[0, 1\]"),
    ("Heun for raster", lambda r, t: ["sample", str(r["raster"]), "--heun"], "raster model does not take --heun"),
    ("unwritable --npz", lambda r, t: ["sample", str(r["raster"]), "--npz", "/proc/x/s.npz"], "choose another --npz"),
    ("--npz without .npz", lambda r, t: ["sample", str(r["raster"]), "--npz", str(t / "s.png")], "ending in .npz"),
    ("negative RAR guidance power", lambda r, t: ["sample", str(r["rar"]), "--guidance-power", "-1"],
     "guidance_power must be a number >= 0"),
    ("an unknown guidance schedule", lambda r, t: ["sample", str(r["raster"]), "--guidance-schedule", "cos"],
     "guidance_schedule must be one of constant, linear, cosine, got 'cos'"),
    ("steps for an ablation sheet", lambda r, t: ["sweep", "ablation", "--sheet", "01", "--steps", "5"],
     "fixes its own steps"),
    ("an ablation sheet not named", lambda r, t: ["sweep", "ablation"], "--sheet 01 | 03"),
    ("a FlowAR option for RAR", lambda r, t: ["sample", str(r["rar"]), "--guidance-high", "0.5"],
     "rar model does not take --guidance-high"),
    ("an anneal window backwards", lambda r, t: ["train", "emoji-rar", "--set", "anneal_start=0.9", "--set",
                                                 "anneal_end=0.2"], "anneal_start <= anneal_end"),
    # options that did nothing, or something else, without a word (issue 24): refused before any work
    ("an infinite learning rate", lambda r, t: train_args(t, "lr=inf"), "lr must be a finite number > 0"),
    ("an infinite time budget", lambda r, t: train_args(t, "minutes=inf"), "minutes must be a finite number >= 0"),
    ("demo without a budget", lambda r, t: ["demo", "--minutes", "0", "--out", str(t / "d")],
     "--minutes is the demo's training budget, a number > 0"),
    ("demo with a negative budget", lambda r, t: ["demo", "--minutes", "-1", "--out", str(t / "d")],
     "--minutes is the demo's training budget"),
    ("demo fd on 3 samples", lambda r, t: ["demo", "--fd", "3", "--out", str(t / "d")], "0 to skip, or at least 10"),
    ("codebook sweep of 0 steps", lambda r, t: ["sweep", "codebook", "--steps", "0", "--out", str(t)],
     "--steps is each cell's training steps, a whole number >= 1"),
    ("grading time limit 0", lambda r, t: ["course", "grade", str(t), "--timeout", "0"], "--timeout .* a number > 0"),
    ("grading time limit -5", lambda r, t: ["course", "grade", str(t), "--timeout", "-5"], "--timeout .* > 0"),
    ("grading jobs 0", lambda r, t: ["course", "grade", str(t), "--jobs", "0"], "--jobs .* from 1 to 64"),
    ("grading memory -1", lambda r, t: ["course", "grade", str(t), "--memory", "-1"], "--memory .* GB .* got -1"),
    ("grading import time nan", lambda r, t: ["course", "grade", str(t), "--import-timeout", "nan"],
     "--import-timeout .* seconds"),
    # output paths checked before the sampling, not after it
    ("--out is a folder", lambda r, t: ["sample", str(r["raster"]), "--out", str(t)], "is a folder; name the picture"),
    ("--out of an unknown kind", lambda r, t: ["sample", str(r["raster"]), "--out", str(t / "grid.xyz")],
     "must end in one of .png"),
    ("--npz is a folder", lambda r, t: ["sample", str(r["raster"]), "--npz", str(t)], "is a folder; name the file"),
    ("--fd on one sample", lambda r, t: ["sample", str(r["raster"]), "--fd", "--n", "1"], "at least 10 samples"),
    ("more samples than memory", lambda r, t: ["sample", str(r["raster"]), "--n", str(10**12)],
     "would hold .* GiB of images in memory"),
    ("an unknown device", lambda r, t: ["sample", str(r["raster"]), "--device", "tpu"], "unknown device 'tpu'"),
    ("infinite guidance", lambda r, t: ["sample", str(r["raster"]), "--guidance", "inf"],
     "guidance must be a finite number"),
    ("a temperature that overflows", lambda r, t: ["sample", str(r["raster"]), "--temperature", "1e-45"],
     "temperature 1e-45: a temperature this small makes the logits overflow"),
    ("FlowAR guidance that blows up", lambda r, t: ["sample", str(r["flowar"]), "--guidance", "1e30", "--n", "2"],
     "came out as NaN or inf .*guidance 1e\\+30"),
    ("FlowAR guidance interval below 0", lambda r, t: ["sample", str(r["flowar"]), "--guidance-high", "-0.5"],
     "guidance_high is a time in"),
    ("a zero-width tokenizer", lambda r, t: train_args(t, "ch=0"), "ch must be a whole number >= 1"),
    ("runs/ is a file", lambda r, t: train_args(t / "a-file"), "cannot write the run folder there"),
    ("a 300-character run name", lambda r, t: train_args(t, "name=" + "x" * 300), "at most 200"),
    ("a generator run as the tokenizer", lambda r, t: ["train", "emoji-raster", "--set", f"tokenizer={r['raster']}",
                                                       "--set", f"out_dir={t}"], "a generator, not a tokenizer"),
]


@pytest.mark.parametrize("make_argv, message", [c[1:] for c in CLI], ids=[c[0] for c in CLI])
def test_cli_refuses_with_one_clear_line(make_argv, message, runs, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    assert main(make_argv(runs, tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    # a refusal that can only come mid-sampling (non-finite samples) follows the progress bar's line
    err = "\n".join(line for line in err.splitlines() if not re.match(r"^[\w -]+:\s+\d+%\|", line))
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(message, err), err


def test_the_valid_flowar_options_sample(runs, tmp_path, capsys):
    """The other side of the FlowAR rows above: in range, the same options are taken and change the samples."""
    grids = []
    for extra in ([], ["--heun", "--guidance-high", "1.0"]):
        out = tmp_path / f"grid{len(grids)}.png"
        assert main(["sample", str(runs["flowar"]), "--n", "3", "--sample-steps", "2", "--guidance", "3", "--out",
                     str(out), *extra]) == 0
        grids.append(out.read_bytes())
    assert "3 of 3 samples" in capsys.readouterr().out and grids[0] != grids[1]


def test_samples_in_the_adm_evaluator_layout(runs, tmp_path, capsys):
    import numpy as np
    npz = tmp_path / "samples.npz"
    assert main(["sample", str(runs["rar"]), "--n", "5", "--classes", "2,4", "--npz", str(npz),
                 "--out", str(tmp_path / "grid.png")]) == 0
    with np.load(npz) as f:
        assert f["arr_0"].shape == (5, 32, 32, 3) and f["arr_0"].dtype == np.uint8
        assert f["labels"].tolist() == [2, 4, 2, 4, 2]
    assert "arr_0 (5, 32, 32, 3) uint8" in capsys.readouterr().out


def test_the_valid_rar_options_sample(runs, tmp_path, capsys):
    grids = []
    for extra in (["--guidance-power", "0"], ["--guidance-power", "2.75", "--top-k", "5"]):
        out = tmp_path / f"grid{len(grids)}.png"
        assert main(["sample", str(runs["rar"]), "--n", "3", "--guidance", "3", "--out", str(out), *extra]) == 0
        grids.append(out.read_bytes())
    assert "3 of 3 samples" in capsys.readouterr().out and grids[0] != grids[1]


def test_failed_validations_leave_no_run_folder(tmp_path):
    for sets in (["max_steps=-5"], ["device=tpu"], ["image_size=30"], ["ch=0"], ["lr=inf"]):
        assert main(train_args(tmp_path, *sets)) == 2
    assert main(["train", "emoji-raster", "--set", f"out_dir={tmp_path}", "--set", "codebook_size=7", "--set",
                 f"tokenizer={tmp_path}/none"]) == 2
    assert not any(tmp_path.iterdir())


def test_the_order_of_set_options_does_not_matter():
    a = recipes.get("emoji-raster", ["dim=64", "n_head=2"])  # 64 / 6 heads would fail if checked in between
    b = recipes.get("emoji-raster", ["n_head=2", "dim=64"])
    assert a.model_config == b.model_config


def test_resume_of_a_run_that_does_not_exist_says_it_starts_one(tmp_path, capsys):
    assert main(train_args(tmp_path) + ["--resume"]) == 0
    assert "holds no checkpoint yet: starting a new run" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- the Python API

def encode_pixels_0_255():
    tiny_vqvae().encode(torch.rand(2, 3, 32, 32) * 255)


def encode_nan():
    tiny_vqvae().encode(torch.full((1, 3, 32, 32), float("nan")))


def corrupt_checkpoint(tmp):
    (tmp / "ckpt.pt").write_bytes(b"not a checkpoint at all")
    minivar.load(tmp)


def unsafe_checkpoint(tmp):
    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo ran",))

    with open(tmp / "ckpt.pt", "wb") as fh:
        pickle.dump({"model": Evil(), "config": {}}, fh, protocol=2)  # torch says "Unsupported global: GLOBAL ..."
    load_checkpoint(tmp / "ckpt.pt")


def plain_pickle(tmp):
    with open(tmp / "ckpt.pt", "wb") as fh:
        pickle.dump({"model": {}, "config": {}}, fh, protocol=4)  # not a torch file: safe loading cannot read it
    load_checkpoint(tmp / "ckpt.pt")


def wrong_kind(runs):
    VQVAE.from_checkpoint(runs["raster"])


API = [  # (id, call(runs, tmp), exception, message)
    ("images in [0, 255]", lambda r, t: encode_pixels_0_255(), ValueError, r"in \[-1, 1\].*images / 127.5 - 1"),
    ("NaN images", lambda r, t: encode_nan(), ValueError, "NaN"),
    ("grey 28x28 images", lambda r, t: tiny_vqvae().encode(torch.zeros(2, 1, 28, 28)), ValueError,
     r"\(B, 3, 32, 32\) in \[-1, 1\]"),
    ("uint8 images", lambda r, t: tiny_vqvae().encode(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)), ValueError,
     "float images"),
    ("decode one map without batch axis", lambda r, t: tiny_vqvae().decode(torch.zeros(16, 16, dtype=torch.long)),
     ValueError, r"tokens\[None\]"),
    ("decode codes out of range", lambda r, t: tiny_vqvae().decode(torch.full((1, 16, 16), 99)), ValueError,
     r"\[0, 32\)"),
    ("float labels", lambda r, t: tiny_raster(r).generate(torch.tensor([0.5, 1.0])), ValueError, "integers"),
    ("the null class as a label", lambda r, t: tiny_raster(r).generate(torch.tensor([9])), ValueError, r"\[0, 9\)"),
    ("negative label", lambda r, t: tiny_raster(r).generate([-1]), ValueError, r"\[0, 9\)"),
    ("label 100", lambda r, t: tiny_raster(r).generate([100]), ValueError, r"\[0, 9\)"),
    ("a scalar label", lambda r, t: tiny_raster(r).generate(torch.tensor(3)), ValueError, "1-D"),
    ("FlowAR float labels", lambda r, t: minivar.load(r["flowar"]).generate(torch.tensor([1.0])), ValueError,
     "integers"),
    ("FlowAR latents of another size", lambda r, t: minivar.load(r["flowar"]).condition(torch.zeros(1, 4, 8, 8),
                                                                                          torch.tensor([0])),
     ValueError, r"\(B, 4, 16, 16\)"),
    ("KL decode of token maps", lambda r, t: minivar.load(r["flowar"]).tokenizer.decode(torch.zeros(1, 16, 16,
                                                                                                  dtype=torch.long)),
     ValueError, "float latents"),
    ("negative guidance", lambda r, t: tiny_raster(r).generate([0], guidance=-1.0), ValueError, "guidance must be"),
    ("FlowAR with 0 ODE steps", lambda r, t: minivar.load(r["flowar"]).generate([0], sample_steps=0), ValueError,
     "sample_steps must be a whole number >= 1 .*--sample-steps"),
    ("FlowAR with 1.5 ODE steps", lambda r, t: minivar.load(r["flowar"]).generate([0], sample_steps=1.5),
     ValueError, "sample_steps must be a whole number >= 1"),
    ("FlowAR with the old name of its steps", lambda r, t: minivar.load(r["flowar"]).generate([0], steps=5),
     ValueError, "a flowar model does not take steps; its sampling options: .*sample_steps"),
    ("options of another generator", lambda r, t: minivar.load(r["flowar"]).generate(
        [0], tiny_raster(r).options_class()),
     ValueError, "options must be a FlowARSampling"),
    ("a FlowAR config guiding past t = 1", lambda r, t: recipes.get("emoji-flowar", ["guidance_high=1.5"]), ValueError,
     "guidance_high is a time in \\[0, 1\\].*--set guidance_high"),
    ("RAR orders that repeat a position", lambda r, t: minivar.load(r["rar"]).generate(
        [0], orders=torch.zeros(256, dtype=torch.long)), ValueError, "permutations of 0..255"),
    ("RAR completion of another size", lambda r, t: minivar.load(r["rar"]).generate(
        [0], given=torch.zeros(1, 8, dtype=torch.long)), ValueError, r"given must be a LongTensor \(1, 256\)"),
    ("RAR logits for unordered orders", lambda r, t: minivar.load(r["rar"])(
        torch.zeros(1, 256, dtype=torch.long), torch.tensor([0]), torch.ones(1, 256, dtype=torch.long)), ValueError,
     "permutation of 0..255"),
    ("RAR loader with a field of another model", lambda r, t: load_rar({}, depth=3), ValueError,
     "unknown RAR config fields.*hidden_size"),
    ("MaskGIT-VQ loader with z_channels != embedding_dim", lambda r, t: load_maskgit_vq({}, z_channels=8,
                                                                                        embedding_dim=16),
     ValueError, "must equal embedding_dim"),
    ("a checkpoint of another kind", lambda r, t: wrong_kind(r), ValueError, "holds a 'raster' model"),
    ("a corrupt checkpoint", lambda r, t: corrupt_checkpoint(t), CheckpointError, "corrupt or truncated"),
    ("a pickle that names os.system", lambda r, t: unsafe_checkpoint(t), CheckpointError, "refused as unsafe"),
    ("a plain pickle", lambda r, t: plain_pickle(t), CheckpointError, "not a checkpoint at all"),
    ("official loader given a tensor", lambda r, t: load_llamagen_vq(torch.zeros(3)), ValueError,
     "expected a state dict"),
    ("VAR loader given a list", lambda r, t: load_var([1, 2]), ValueError, "expected a state dict"),
    ("unknown dataset", lambda r, t: load_dataset("mnist"), ValueError, "emoji, cifar10, imagenet64, folder"),
    ("unknown split", lambda r, t: load_dataset("emoji", "val"), ValueError, "'train' or 'test'"),
    ("emoji at 48 px", lambda r, t: load_dataset("emoji", image_size=48), ValueError, "32 or 64"),
    ("folder without a root", lambda r, t: load_dataset("folder"), ValueError, "data_root"),
    ("batch larger than the data", lambda r, t: StepBatches(10, 16), ValueError, "fewer than one batch"),
    # models given what they cannot use (issue 24)
    ("a multi-scale decode missing a scale", lambda r, t: decode_missing_scale(), ValueError,
     "needs the token maps of all 6 scales"),
    ("float token ids", lambda r, t: tiny_vqvae().decode(torch.zeros(1, 16, 16)), TypeError, "integer token"),
    ("negative token ids", lambda r, t: tiny_vqvae().decode(-torch.ones(1, 16, 16, dtype=torch.long)), ValueError,
     "must lie in \\[0, 32\\)"),
    ("token ids past the codebook", lambda r, t: tiny_vqvae().decode(torch.full((1, 16, 16), 32)), ValueError,
     "must lie in \\[0, 32\\)"),
    ("a generator bound to other tokenizer weights", lambda r, t: bind_other_weights(r), ValueError,
     "trained on a tokenizer with other weights"),
    ("a checkpoint with a flipped bit", lambda r, t: flipped_bit(r, t), CheckpointError,
     "no longer match the checksum"),
    ("a checkpoint loaded onto a missing GPU", lambda r, t: load_checkpoint(r["tokenizer"] / "ckpt.pt", "cuda:7")
     if not torch.cuda.is_available() else pytest.skip("has a GPU"), CheckpointError, "file is fine; choose a device"),
    ("a manifest without sha256", lambda r, t: bad_manifest(t, drop="sha256"), CheckpointError, "lacks a valid sha256"),
    ("a manifest that is a list", lambda r, t: bad_manifest(t, as_list=True), CheckpointError,
     "not a shipped model's manifest"),
    ("a manifest of another kind", lambda r, t: bad_manifest(t, kind="var"), CheckpointError, "its manifest says var"),
]


def decode_missing_scale():
    import minivar.pretrained as pretrained
    tok = pretrained.load("emoji-msvq")
    return tok.decode(tok.encode(torch.zeros(1, 3, 32, 32))[:5])


def bind_other_weights(runs):
    gen = minivar.load(runs["raster"])
    other = minivar.load(runs["tokenizer"])
    with torch.no_grad():
        next(other.parameters()).add_(0.01)  # the same kind and shape, other weights
    return gen.bind(other)


def flipped_bit(runs, tmp):
    ckpt = load_checkpoint(runs["tokenizer"] / "ckpt.pt")
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][name].view(-1)[0] += 1e-3  # what one flipped bit does to one weight, written back unchecked
    torch.save(ckpt, tmp / "flipped.pt")
    return load_checkpoint(tmp / "flipped.pt")


def bad_manifest(tmp, drop=None, as_list=False, kind=None):
    import shutil

    from minivar import checkpoint, pretrained
    folder = tmp / "weights"
    folder.mkdir()
    for f in ("emoji-msvq.pt", "emoji-msvq.json"):
        shutil.copy(checkpoint.SHIPPED_DIR / f, folder / f)
    info = json.loads((folder / "emoji-msvq.json").read_text())
    info.pop(drop, None)
    info["kind"] = kind or info["kind"]
    (folder / "emoji-msvq.json").write_text(json.dumps([info] if as_list else info))
    old, checkpoint.SHIPPED_DIR = checkpoint.SHIPPED_DIR, folder
    try:
        return pretrained.load("emoji-msvq")
    finally:
        checkpoint.SHIPPED_DIR = old


@pytest.mark.parametrize("call, error, message", [c[1:] for c in API], ids=[c[0] for c in API])
def test_api_refuses_with_a_message_that_names_the_fix(call, error, message, runs, tmp_path):
    with pytest.raises(error, match=message):
        call(runs, tmp_path)


# ----------------------------------------------------------------------- files a crash or a user left behind

def test_a_torn_last_log_line_does_not_block_resume(tmp_path):
    cfg = tiny_train_config(tmp_path, max_steps=4, ckpt_every=4, eval_every=100)
    train(cfg, progress=False)
    with open(cfg.run_dir / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 5, "lo')  # the process died mid-write
    cfg.max_steps = 6
    assert train(cfg, resume=True, progress=False)["step"] == 6
    steps = [json.loads(line)["step"] for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = save_checkpoint({"model": {}, "config": {}, "step": 1}, tmp_path / "ckpt.pt")

    def disk_full(obj, fh):
        fh.write(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="disk full or write failed.*the previous checkpoint is kept"):
        save_checkpoint({"model": {}, "config": {}, "step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1 and [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_temporary_files_of_a_killed_save_are_cleaned_up(tmp_path):
    (tmp_path / ".ckpt.pt.tmp12345").write_bytes(b"half a checkpoint")
    save_checkpoint({"model": {}, "config": {}}, tmp_path / "ckpt.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_a_folder_dataset_without_a_test_split_says_so(tmp_path):
    from PIL import Image
    (tmp_path / "red").mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "red" / "0.png")
    assert len(load_dataset("folder", "train", image_size=8, root=tmp_path)) == 1  # no warning for train
    with pytest.warns(UserWarning, match="the test split is the training images"):
        load_dataset("folder", "test", image_size=8, root=tmp_path)


def test_a_corrupt_image_in_a_folder_dataset_is_named(tmp_path):
    (tmp_path / "train" / "cats").mkdir(parents=True)
    (tmp_path / "train" / "cats" / "broken.png").write_bytes(b"\x89PNG not really")
    d = load_dataset("folder", "train", image_size=8, root=tmp_path)
    with pytest.raises(ValueError, match=r"broken\.png.*remove or replace"):
        d[0]


def test_a_generator_refuses_a_tokenizer_trained_further(tmp_path):
    tok = tiny_train_config(tmp_path, max_steps=2, eval_every=100, ckpt_every=100)
    train(tok, progress=False)
    gen = tiny_raster_config(tmp_path, tok.run_dir, max_steps=2, eval_every=100)
    train(gen, progress=False)
    tok.max_steps = 3
    train(tok, resume=True, progress=False)  # the tokenizer moves on: its codes now mean other images
    with pytest.raises(CheckpointError, match="holds other weights"):
        minivar.load(gen.run_dir)
    assert main(["sample", str(gen.run_dir)]) == 2
    gen.max_steps = 4
    with pytest.raises(ValueError, match="other weights of the tokenizer .* start this generator afresh"):
        train(gen, resume=True, progress=False)
