"""What the benchmark scripts share: a recipe's model with random weights, and an append-only results CSV.

Run the scripts from the repository (`python benchmarks/<script>.py`) with minivar installed (`pip install -e .`);
they use only minivar's public API.
"""

import csv
import datetime
import os
import platform
import sys
from pathlib import Path

import torch

from minivar import recipes
from minivar.models import build

RESULTS = Path(__file__).resolve().parent / "results"  # the recorded results (--out chooses another folder)


def build_recipe_model(name: str, device):
    """-> (the recipe's model with random weights, its TrainConfig, its tokenizer or None). A generator is bound to
    a randomly initialised tokenizer of its tokenizer's recipe: the cost of a step does not depend on the values."""
    cfg = recipes.get(name)
    torch.manual_seed(0)
    tokenizer = None
    if cfg.tokenizer:
        tok_cfg = recipes.get(Path(cfg.tokenizer.removeprefix("pretrained:")).name)  # its recipe, random weights
        tokenizer = build(tok_cfg.model, tok_cfg.model_config).to(device).eval().requires_grad_(False)
    return build(cfg.model, cfg.model_config, tokenizer).to(device), cfg, tokenizer


def machine(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def latest_rows(csv_path: Path, key: str = "recipe") -> dict:
    """The latest recorded row for each value of `key` in a results CSV: {value: row (strings, as the CSV holds
    them)} (the files are append-only, so a later run of the same recipe supersedes an earlier one)."""
    return {r[key]: r for r in csv.DictReader(open(csv_path, newline=""))}


def record(csv_path: Path, rows: list, device):
    """Append rows (dicts) to csv_path with the date, command, machine and torch version. The file is rewritten
    whole and replaced atomically, so columns added later line up and an interrupt never leaves it half-written."""
    stamp = {"date": datetime.date.today().isoformat(), "command": "python " + " ".join(sys.argv),
             "machine": machine(device), "torch": torch.__version__, "device": str(device)}
    new = [{**stamp, **r} for r in rows]
    old = list(csv.DictReader(open(csv_path, newline=""))) if csv_path.exists() else []
    fields = list(dict.fromkeys([k for r in old + new for k in r]))
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = csv_path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(old + new)
    os.replace(tmp, csv_path)
    return stamp
