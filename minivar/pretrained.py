"""The shipped emoji checkpoints: good pictures at once, and a recorded command to train them again when curious.

    from minivar import pretrained
    pretrained.available()                  # the names, e.g. ['emoji-msvq', 'emoji-var', ...]
    var = pretrained.load("emoji-var")      # a generator in eval mode, bound to its shipped tokenizer
    pretrained.manifest("emoji-var")        # how it was trained, on what machine, and what it measures
    pretrained.training_log("emoji-var")    # its training and test curves (the run's metrics.jsonl)
    pretrained.run_result("pretrained:emoji-var")   # its final metrics (a run folder: its result.json)
    model, log, where = pretrained.load_or_train("emoji-var", train=TRAIN, minutes=8)   # the notebooks' pattern

    python -m minivar sample pretrained:emoji-var --n 64       # anything that takes a run folder takes this
    python -m minivar train emoji-var --set tokenizer=pretrained:emoji-msvq   # train over a shipped tokenizer

Each checkpoint is three files in minivar/weights/ (inside the package, so they install with it):
- NAME.pt: the model's parameters in half precision (half the bytes; the pictures do not change visibly) and the
  run's config, a plain dict that `torch.load(weights_only=True)` reads. Loading casts them back to float32.
- NAME.json, its manifest: the exact command that trained it, steps, minutes, machine and torch version, the quality
  measured on the shipped half-precision weights (and the command that measures it again), and the sha256 of NAME.pt,
  checked at every load: a damaged or swapped file is refused before it is read.
- NAME.metrics.jsonl: the run's log (loss, learning rate, test metrics by step), for the notebooks' curves.
A shipped generator names its tokenizer "pretrained:NAME", so it loads wherever minivar is installed.

`export(run, name, command=...)` turns a finished run into a shipped checkpoint (a maintainer's step: tokenizers
first, then the generators trained on them). Replace shipped files rarely: every version stays in git history.
"""

import json
import os
import platform
import time
from pathlib import Path

import torch

from . import checkpoint, models, smoke
from .checkpoint import PRETRAINED, file_sha256, read_log, save_checkpoint, shipped_manifest, shipped_names
from .files import FolderInUse, write_json, write_text
from .models import Generator, Tokenizer, weights_checksum
from .recipes import RECIPES
from .recipes import get as get_recipe
from .runs import load_run
from .train import train as train_run


def available() -> list:
    """Names of the shipped checkpoints."""
    return shipped_names()


def manifest(name: str) -> dict:
    """How a shipped checkpoint was made and what it measures (its NAME.json)."""
    return shipped_manifest(name)


def load(name: str, map_location="cpu"):
    """The shipped model NAME (or "pretrained:NAME") in eval mode; a generator comes bound to its tokenizer."""
    return models.load(PRETRAINED + name.removeprefix(PRETRAINED), map_location)


def training_log(name: str) -> list:
    """The metrics.jsonl records of the run a shipped checkpoint came from (training and test curves)."""
    info = shipped_manifest(name)
    return read_log(checkpoint.SHIPPED_DIR / info["log"]) if info.get("log") else []


def run_result(where: str) -> dict:
    """The final metrics of a run, as `train` returns them ("step", "elapsed" seconds, "loss", "test_..."), for a
    shipped model ("pretrained:NAME": from its manifest) or a run folder (its result.json)."""
    if str(where).startswith(PRETRAINED):
        info = shipped_manifest(str(where))
        return {"step": info["steps"], "elapsed": 60 * (info["minutes"] or 0), **info["run_result"]}
    path = models.checkpoint_path(where).parent / "result.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the run in {Path(where)} has not finished (train it to the end)")
    return json.loads(path.read_text())


# Smoke runs (MINIVAR_SMOKE=1) of any recipe: offline (no LPIPS download, no GAN), small batches on the main
# process and four steps, so a GPU recipe's code path runs on a CPU in seconds; the notebook's own sets shrink the
# model. (They check that the code runs, not what it learns.)
SMOKE_SETS = ("perceptual_weight=0", "disc_weight=0", "num_workers=0", "batch_size=16", "eval_batches=2", "max_steps=4")


def load_or_train(recipe: str, train: bool = False, minutes: float = 8.0, sets=(), name=None, tokenizer_sets=()):
    """The notebooks' "load the shipped checkpoint, else train" -> (model in eval mode, its training log records,
    where it lives: "pretrained:NAME" or the run folder, what a generator's `tokenizer=` takes).
    train=False: the shipped model `name` (default: the recipe's name). train=True (or no shipped one, or
    MINIVAR_SMOKE=1, where this trains tiny): train the recipe here for `minutes` with `--set` overrides `sets` (a
    variant of a recipe ships under its own name: load_or_train("emoji-flowar", sets=["head=mlp"],
    name="emoji-flowar-mlp")), as the run NAME-here (NAME-smoke), continued if it exists.
    A generator whose recipe names a recipe's tokenizer run ("runs/cifar10-msvq") that is not there (or any, in a
    smoke run) gets it the same way first: load_or_train(that recipe, train, minutes, tokenizer_sets); a run folder
    named in `sets` ("tokenizer=runs/cifar10-msvq-here") is used as it is."""
    name = name or recipe
    if not train and not smoke() and name in available():
        return load(name), training_log(name), PRETRAINED + name
    if not train and not smoke():
        print(f"no shipped checkpoint named {name!r}: training it here for {minutes:g} minutes")
    sets = [f"name={name}{'-smoke' if smoke() else '-here'}", f"minutes={minutes}", "max_steps=100000",
            *(SMOKE_SETS if smoke() else ()), *sets]
    cfg = get_recipe(recipe, sets)
    wanted = cfg.tokenizer
    tokenizer_recipe = Path(wanted).name
    if wanted and not wanted.startswith(PRETRAINED) and tokenizer_recipe in RECIPES and (
            smoke() or not models.checkpoint_path(wanted).exists()):
        print(f"{recipe} reads the tokenizer {wanted}: getting it first")
        *_, where = load_or_train(tokenizer_recipe, train, minutes, sets=tokenizer_sets)
        cfg = get_recipe(recipe, [*sets, f"tokenizer={where}"])
    result = train_waiting_for_others(cfg)
    return result["model"].eval(), read_log(cfg.run_dir / "metrics.jsonl"), str(cfg.run_dir)


def train_waiting_for_others(cfg, patience_minutes: float = 60.0) -> dict:
    """train(cfg, resume=True); while another process owns the run (another notebook training the same run, a second
    test worker), wait for it to finish, then continue (usually: load) what it trained."""
    deadline, said = time.monotonic() + 60 * patience_minutes, False
    while True:
        try:
            return train_run(cfg, resume=True)
        except FolderInUse as e:
            if time.monotonic() > deadline:
                raise
            if not said:
                print(f"{e}\nwaiting for it (up to {patience_minutes:g} minutes), then loading what it trained")
                said = True
            time.sleep(2)


# ---------------------------------------------------------------- measuring and exporting (maintainers)

def half_state(model: torch.nn.Module) -> dict:
    """The state dict with parameters in float16 (buffers such as RoPE tables and running statistics stay exact)."""
    params = {name for name, _ in model.named_parameters()}
    return {k: v.detach().cpu().half() if k in params and v.dtype == torch.float32 else v.detach().cpu()
            for k, v in model.state_dict().items()}


@torch.no_grad()
def measure(model, n: int = 1000, guidance=None, seed: int = 0, batch_size: int = 100, progress=True,
            **options) -> dict:
    """The quality figures a manifest records, on the emoji test split.
    Tokenizer: PSNR, SSIM, codebook usage and perplexity of its reconstructions (the whole split), and the
    fd_emoji between the test images and their reconstructions (the floor its generators' fd_emoji cannot pass).
    Generator: fd_emoji with its 95% bootstrap interval, and k-NN precision / recall, of n samples whose labels
    follow the test split's class frequencies (as `python -m minivar sample RUN --n 1000 --fd` draws them), drawn
    with the generator's sampling options (fields of its options_class, e.g. guidance_schedule="constant")."""
    from .data import load_dataset
    from .metrics import emoji_precision_recall, evaluate_tokenizer, fd_emoji_ci
    if isinstance(model, Tokenizer):
        from torch.utils.data import DataLoader
        test = load_dataset("emoji", "test", image_size=model.code_format()["image_size"])
        stats = evaluate_tokenizer(model, DataLoader(test, batch_size=256), model.device, fd=True)
        return {("fd_emoji_recon" if k == "fd_emoji" else k): round(float(v), 4) for k, v in stats.items()}
    test = load_dataset("emoji", "test", image_size=model.tokenizer.code_format()["image_size"])
    real = torch.stack([test[i][0] for i in range(len(test))])
    labels = test_conditions(model, n)
    chosen = model.sampling_options(guidance=guidance, **options)
    g = torch.Generator(model.device).manual_seed(seed)
    images = model.sample_images(labels, batch_size, chosen, generator=g, progress=progress)
    fd, low, high = fd_emoji_ci(images, real)
    precision, recall = emoji_precision_recall(images, real)
    return {"guidance": chosen.guidance, "samples": n, "seed": seed, "fd_emoji": round(fd, 3),
            "fd_emoji_ci95": [round(low, 3), round(high, 3)], "precision": round(precision, 3),
            "recall": round(recall, 3)}


def test_conditions(model, n: int):
    """What n samples compared with the emoji test split are drawn for, in the split's order, cycled: its labels (so
    the class frequencies match), or for a text model its captions (the words it never saw included)."""
    from .data import dataset_labels, load_captions, load_dataset
    if getattr(model, "conditions", "classes") == "captions":
        captions = load_captions("emoji", "test")
        return [captions[i % len(captions)] for i in range(n)]
    labels = dataset_labels(load_dataset("emoji", "test", image_size=model.tokenizer.code_format()["image_size"]))
    return labels[torch.arange(n) % len(labels)]


def machine() -> str:
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, {cuda}"


def export(run, name=None, *, command: str, tokenizer=None, guidance=None, n: int = 1000, notes: str = "") -> dict:
    """Ship the finished run `run` as NAME (default: the run's name): write minivar/weights/NAME.pt, then measure the
    shipped weights themselves and write NAME.json. `command` is the exact command that trained the run. A
    generator's tokenizer must be shipped first, under the name `tokenizer`, and must hold the run's tokenizer
    weights (rounded to half precision): a generator is only as good as the codes it learned."""
    model, cfg, run_tokenizer = load_run(run)
    name = name or cfg.name
    result_path = models.checkpoint_path(run).parent / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    config = json.loads(json.dumps(cfg.to_dict()))  # plain lists and numbers, as a checkpoint holds them
    extra = {}
    if isinstance(model, Generator):
        if not tokenizer:
            raise ValueError(f"{run} is a generator: ship its tokenizer first and name it, e.g. tokenizer='emoji-msvq'")
        shipped = load(tokenizer)
        rounded = type(run_tokenizer)(run_tokenizer.cfg)
        rounded.load_state_dict(half_state(run_tokenizer))
        if weights_checksum(rounded) != weights_checksum(shipped):
            raise ValueError(f"the shipped tokenizer {tokenizer!r} is not the one {run} was trained on "
                             f"({cfg.tokenizer}); export that run as {tokenizer!r} first")
        config["tokenizer"] = PRETRAINED + tokenizer
        extra["tokenizer_checksum"] = weights_checksum(shipped)
    path = save_checkpoint({"model": half_state(model), "config": config, "step": result.get("step"), **extra},
                           checkpoint.SHIPPED_DIR / f"{name}.pt")
    log = read_log(models.checkpoint_path(run).parent / "metrics.jsonl", upto_step=result.get("step"))
    if log:  # the curves the notebooks plot, one compact record per line
        write_text(path.with_suffix(".metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in log))
    info = {"name": name, "kind": cfg.model, "file": path.name, "sha256": file_sha256(path),
            "bytes": path.stat().st_size, "parameters": sum(p.numel() for p in model.parameters()), "command": command,
            "tokenizer": config["tokenizer"] or None, "steps": result.get("step"),
            "minutes": round(result["elapsed"] / 60, 1) if "elapsed" in result else None,
            "images_per_s": round(result["images_per_s"], 1) if "images_per_s" in result else None,
            "machine": machine(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
            "run_result": {k: round(v, 4) for k, v in result.items() if k.startswith(("test_", "loss"))
                           and isinstance(v, float)}, "log": f"{name}.metrics.jsonl" if log else None, "notes": notes}
    write_json(path.with_suffix(".json"), info)  # the sha256 is in: the file can be loaded and measured now
    info["metrics"] = measure(load(name), n=n, guidance=guidance)
    info["measure_command"] = (f"python -m minivar sample pretrained:{name} --n {n} --fd --guidance "
                               f"{info['metrics']['guidance']:g}" if isinstance(model, Generator) else
                               f"minivar.pretrained.measure(minivar.pretrained.load({name!r}))")
    write_json(path.with_suffix(".json"), info)
    return info


__all__ = ["available", "manifest", "load", "training_log", "run_result", "load_or_train", "measure", "export",
           "half_state", "machine", "write_json"]
