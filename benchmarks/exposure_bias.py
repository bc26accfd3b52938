"""Exposure bias, measured: how much worse does a generator predict when it reads its own tokens instead of true ones?

    python benchmarks/exposure_bias.py             # the shipped emoji-var and emoji-raster (about a minute)
    python benchmarks/exposure_bias.py --var runs/my-var --raster runs/my-raster

Training feeds a generator the true earlier tokens (teacher forcing); sampling feeds it the ones it drew itself. On
every test emoji (encoded by the generator's own tokenizer) this script scores the true tokens three ways:

- **teacher forcing**: the cross-entropy of each true token given the true tokens before it (the test loss);
- **own inputs**: every earlier token is replaced by the model's own draw at that position (sampled, temperature 1,
  no guidance, from its teacher-forced prediction there), and the true token is scored given those. For VAR a
  whole scale is drawn at once, as its sampler does; for the raster GPT each token given the true ones before it.

The gap (own - teacher) per scale (VAR) or per row of tokens (raster) is the price of the model's own errors in its
context, with a 95% interval over test emoji (paired differences). Rows go to <out>/exposure_bias.csv (default
benchmarks/results/), the figure to <out>/exposure_bias.png.
"""

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import RESULTS, record  # noqa: E402

from minivar import load  # noqa: E402
from minivar.data import dataset_labels, load_dataset  # noqa: E402
from minivar.sampling import sample  # noqa: E402
from minivar.viz import save_figure


def own_draws(logits, generator):
    """(B, L, V) logits -> (B, L) tokens, each drawn from its own position's prediction (temperature 1)."""
    B, L, V = logits.shape
    return sample(logits.reshape(B * L, V), 1.0, 0, 1.0, generator).view(B, L)


def per_token_ce(logits, targets):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)


@torch.no_grad()
def var_losses(model, images, labels, generator) -> dict:
    """VAR: per-token cross-entropies (N, L) under teacher forcing and with its own draws as the context."""
    tok, q, scales = model.tokenizer, model.quantizer, model.cfg.scales
    maps = tok.encode_scales(images)
    true = torch.cat([m.flatten(1) for m in maps], 1)  # (N, L)
    teacher = model(labels, q.teacher_forcing_input(maps))
    drawn = own_draws(teacher, generator)
    drawn_maps = [m.view(-1, s, s) for m, s in zip(drawn.split([s * s for s in scales], 1), scales)]
    own = model(labels, q.teacher_forcing_input(drawn_maps))
    return {"teacher": per_token_ce(teacher, true), "own": per_token_ce(own, true)}


@torch.no_grad()
def raster_losses(model, images, labels, generator) -> dict:
    """Raster GPT: per-token cross-entropies (N, L) under teacher forcing and with its own draws as the context."""
    true = model.tokenizer.encode(images).flatten(1)
    teacher = model(true[:, :-1], labels)
    drawn = own_draws(teacher, generator)
    own = model(drawn[:, :-1], labels)
    return {"teacher": per_token_ce(teacher, true), "own": per_token_ce(own, true)}


def groups(model):
    """(name, slice of the token sequence) for each scale (VAR) or row of tokens (raster)."""
    fmt = model.tokenizer.code_format()
    if "scales" in fmt:
        out, start = [], 0
        for s in fmt["scales"]:
            out.append((f"{s}x{s}", slice(start, start + s * s)))
            start += s * s
        return out
    g = fmt["grid"]
    return [(f"row {r + 1}", slice(r * g, (r + 1) * g)) for r in range(g)]


def summarise(name, run, losses, model) -> list:
    """Per group and for all tokens: mean cross-entropy of each kind, and the gap own - teacher with its interval."""
    rows = []
    for group, sl in groups(model) + [("all tokens", slice(None))]:
        per_image = {k: v[:, sl].mean(1) for k, v in losses.items()}  # (N,) each
        row = {"model": name, "run": run, "tokens": group, "n_tokens": losses["teacher"][:, sl].shape[1],
               "n_images": len(per_image["teacher"])}
        for kind, v in per_image.items():
            row[f"ce_{kind}"] = round(v.mean().item(), 4)
        d = per_image["own"] - per_image["teacher"]  # paired: the same emoji, the same true tokens
        half = 1.96 * d.std().item() / math.sqrt(len(d)) if len(d) > 1 else float("nan")
        row["gap"], row["gap_ci95"] = round(d.mean().item(), 4), round(half, 4)
        row["gap_share"] = round(d.mean().item() / per_image["teacher"].mean().item(), 4)
        rows.append(row)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--var", default="pretrained:emoji-var")
    p.add_argument("--raster", default="pretrained:emoji-raster")
    p.add_argument("--repeats", type=int, default=4, help="draws per test emoji (each another random context)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    test = load_dataset("emoji", "test", image_size=32)
    real = torch.stack([test[i][0] for i in range(len(test))])
    labels = dataset_labels(test)
    rows = []
    for name, run, fn in (("VAR", args.var, var_losses), ("raster", args.raster, raster_losses)):
        t0 = time.time()
        model = load(run).eval()
        g = torch.Generator(model.device).manual_seed(args.seed)
        parts = [fn(model, x.to(model.device), y.to(model.device), g)
                 for _ in range(args.repeats) for x, y in zip(real.split(200), labels.split(200))]
        # each emoji's draws averaged: the interval is over test emoji, not over correlated repeats of one
        losses = {k: torch.cat([part[k] for part in parts]).cpu().view(args.repeats, len(real), -1).mean(0)
                  for k in parts[0]}
        new = summarise(name, run, losses, model)
        for row in new:
            row["seconds"] = round(time.time() - t0, 1)
            print(f"{name:<7} {row['tokens']:<11} teacher {row['ce_teacher']:.3f}  own inputs {row['ce_own']:.3f} "
                  f"(gap {row['gap']:+.3f} ± {row['gap_ci95']:.3f}, {row['gap_share']:+.0%})", flush=True)
        rows += new
    args.out.mkdir(parents=True, exist_ok=True)
    record(args.out / "exposure_bias.csv", rows, torch.device("cpu"))
    plot(rows, args.out / "exposure_bias.png")
    print(f"recorded in {args.out / 'exposure_bias.csv'}; figure {args.out / 'exposure_bias.png'}")


def plot(rows, path):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, name in zip(axes, ("VAR", "raster")):
        r = [row for row in rows if row["model"] == name and row["tokens"] != "all tokens"]
        x = range(len(r))
        kinds = [("teacher", "true context (teacher forcing)", "tab:gray"),
                 ("own", "its own draws as context", "tab:red")]
        width = 0.8 / len(kinds)
        for i, (kind, label, colour) in enumerate(kinds):
            ax.bar([xi + (i - (len(kinds) - 1) / 2) * width for xi in x], [row[f"ce_{kind}"] for row in r], width,
                   label=label, color=colour)
        ax.set_xticks(list(x), [row["tokens"] for row in r], rotation=0 if name == "VAR" else 45)
        whole = next(row for row in rows if row["model"] == name and row["tokens"] == "all tokens")
        ax.set_title(f"{name}: all tokens {whole['ce_teacher']:.2f} -> {whole['ce_own']:.2f} nats "
                     f"({whole['gap_share']:+.0%}) with its own context", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("cross-entropy of the true token (nats)")
    fig.suptitle("Exposure bias: the same test emoji scored given true context and given the model's own draws")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
