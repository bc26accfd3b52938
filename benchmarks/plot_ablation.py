"""Plot an ablation sheet's recorded rows: python benchmarks/plot_ablation.py 03 [--results benchmarks/results]

Reads results/ablations_<sheet>.csv (written by `python -m minivar sweep ablation --sheet <sheet>`) and the training
curves it copied to results/ablations_<sheet>/, prints the table and writes results/ablations_<sheet>.png:
tokenizer sheets: test PSNR, codebook usage and reconstruction fd_emoji per row, and the training curves of the
reconstruction loss and the batch perplexity; generator sheets: fd_emoji with its 95% interval, precision and
recall per row, and the training and test loss curves. For sheet 05b also results/ablations_05b_scale.png: fd_emoji
against training images seen for VAR and the raster GPT at two sizes and two lengths (SCALE_POINTS names the rows).
"""

import argparse
import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minivar.checkpoint import read_log  # noqa: E402
from minivar.sweep import row_slug  # noqa: E402
from minivar.viz import save_figure


def smooth(values, k=10):
    k = max(1, min(k, len(values)))
    return np.convolve(values, np.ones(k) / k, mode="valid")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sheet", help="the sheet's number, e.g. 03")
    p.add_argument("--results", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    results = Path(args.results)
    path = results / f"ablations_{args.sheet}.csv"
    if not path.exists():
        sys.exit(f"{path} not found: record the sheet first (python -m minivar sweep ablation --sheet {args.sheet})")
    rows = list(csv.DictReader(open(path)))
    tokenizer = bool(rows[0]["psnr"])
    cols = (["psnr", "usage", "fd_emoji_recon"] if tokenizer else ["fd_emoji", "precision", "recall"]) + ["test_loss"]
    print(f"{'row':<42} {'steps':>5} {'params':>7} " + " ".join(f"{c:>14}" for c in cols) + f" {'minutes':>8}")
    for r in rows:
        vals = [r[c] and f"{float(r[c]):14.3f}" or f"{'':>14}" for c in cols]
        print(f"{r['row']:<42} {r['steps']:>5} {float(r['params_m']):6.2f}M " + " ".join(vals)
              + f" {float(r['train_seconds']) / 60:8.1f}")

    fig, axes = plt.subplots(1, 4, figsize=(19, max(3.8, 1.2 + 0.28 * len(rows))))  # a readable line per row
    names = [r["row"] for r in rows]
    y = np.arange(len(rows))
    if tokenizer:
        panels = [("psnr", "test PSNR (dB)"), ("usage", "codebook usage (test)"), ("fd_emoji_recon",
                                                                                  "fd_emoji of reconstructions")]
    else:
        panels = [("fd_emoji", "fd_emoji, 95% interval (lower is better)"), ("precision", "precision"),
                  ("recall", "recall")]
    for ax, (key, title) in zip(axes, panels):
        vals = np.array([float(r[key]) for r in rows])
        if key == "fd_emoji":
            err = np.array([[v - float(r["fd_low"]), float(r["fd_high"]) - v] for v, r in zip(vals, rows)]).T
            ax.barh(y, vals, xerr=err, color="C0", capsize=3)
        else:
            ax.barh(y, vals, color="C0")
        ends = [float(r["fd_high"]) for r in rows] if key == "fd_emoji" else vals  # past the error bar
        for k, (v, end) in enumerate(zip(vals, ends)):
            ax.text(end, k, f" {v:.3g}", va="center", fontsize=8)
        ax.set_yticks(y, names if ax is axes[0] else [""] * len(y))
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
    curve_key = "recon" if tokenizer else "loss"
    for k, r in enumerate(rows):
        log = read_log(results / f"ablations_{args.sheet}" / f"{row_slug(r['row'])}.jsonl")
        train = [e for e in log if curve_key in e]
        if not train:  # a row that sampled a shipped model trained nothing here
            continue
        steps = np.array([e["step"] for e in train])
        vals = smooth(np.array([e[curve_key] for e in train]), 5)
        axes[3].plot(steps[len(steps) - len(vals):], vals, color=f"C{k}", label=r["row"])
        tests = [e for e in log if "test_loss" in e]
        if tests:
            axes[3].plot([e["step"] for e in tests], [e["test_loss"] for e in tests], "o--", color=f"C{k}", ms=3)
    axes[3].set_xlabel("step")
    axes[3].set_title(f"training {curve_key} (smoothed)" + ("" if tokenizer else "; dashed: test"), fontsize=10)
    if tokenizer:
        axes[3].set_yscale("log")
    axes[3].legend(fontsize=7)
    steps = sorted({r["steps"] for r in rows if not r["recipe"].startswith("pretrained:")}, key=int)
    fig.suptitle(f"ablation sheet {args.sheet}: " + (f"{' or '.join(steps)} training steps per row, " if steps else "")
                 + f"{rows[0]['machine']}, {rows[0]['date']}")
    plt.tight_layout()
    out = results / f"ablations_{args.sheet}.png"
    save_figure(fig, out, dpi=90)
    print(f"wrote {out}")
    if args.sheet == "05b":
        points = plot_scale(results, results / "ablations_05b_scale.png")
        print(f"wrote {results / 'ablations_05b_scale.png'} ({len(points)} of {len(SCALE_POINTS)} points recorded)")


# Sheet 05b's scale study: each point is a recorded row, (order, size, sheet, row). The recipes' 400-step runs are
# sheets 03 and 05's recipe rows; their 2000-step runs are the shipped models, sampled plainly in sheet 05b.
SCALE_POINTS = [
    ("raster", "6 x 192", "03", "recipe (2-D RoPE, 6 x 192)"),
    ("raster", "6 x 192", "05b", "raster, top-k all, top-p 1.0, guidance 2.0"),
    ("raster", "3 x 128", "05b", "raster, 3 x 128, lr 2e-3, warmup 20, 400 steps"),
    ("raster", "3 x 128", "05b", "raster, 3 x 128, lr 2e-3, warmup 20, 2000 steps"),
    ("VAR", "4 x 192", "05", "4 blocks of 192 (the recipe), 400 steps"),
    ("VAR", "4 x 192", "05b", "VAR, top-k all, top-p 1.0, ramp to 2.5"),
    ("VAR", "3 x 128", "05b", "VAR, the demo's 3 x 128, lr 2e-3, warmup 20, 400 steps"),
    ("VAR", "3 x 128", "05b", "VAR, 3 x 128, lr 2e-3, warmup 20, 2000 steps"),
]


def scale_points(results: Path) -> list:
    """The recorded rows of the scale study (those recorded so far), each with its order and size."""
    sheets = {}
    out = []
    for order, size, sheet, row in SCALE_POINTS:
        path = results / f"ablations_{sheet}.csv"
        if sheet not in sheets:
            sheets[sheet] = {r["row"]: r for r in csv.DictReader(open(path))} if path.exists() else {}
        if row in sheets[sheet]:
            out.append({"order": order, "size": size, "sheet": sheet, **sheets[sheet][row]})
    return out


def plot_scale(results: Path, out: Path):
    """fd_emoji against training images seen, one line per order and size (log-log, as scaling plots are)."""
    points = scale_points(results)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for (order, size), colour in zip(sorted({(p["order"], p["size"]) for p in points}),
                                     ["C1", "C3", "C0", "C2"]):
        r = sorted([p for p in points if (p["order"], p["size"]) == (order, size)], key=lambda p: int(p["steps"]))
        x = np.array([int(p["steps"]) * 64 for p in r])  # batch 64 in every run
        y = np.array([float(p["fd_emoji"]) for p in r])
        err = np.array([[v - float(p["fd_low"]), float(p["fd_high"]) - v] for v, p in zip(y, r)]).T
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=colour, ls="-" if order == "VAR" else "--",
                    label=f"{order}, {size} ({float(r[0]['params_m']):.1f} M parameters)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training images seen (steps x batch 64)")
    ax.set_ylabel("fd_emoji, 95% interval (lower is better)")
    ax.set_title("Sheet 05b, scale: two sizes, two lengths, each order", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    plt.tight_layout()
    save_figure(fig, out, dpi=100)
    plt.close(fig)
    return points


if __name__ == "__main__":
    main()
