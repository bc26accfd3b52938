"""Plot an ablation sheet's recorded rows: python benchmarks/plot_ablation.py 03 [--results benchmarks/results]

Reads results/ablations_<sheet>.csv (written by `python -m minivar sweep ablation --sheet <sheet>`) and the training
curves it copied to results/ablations_<sheet>/, prints the table and writes results/ablations_<sheet>.png:
tokenizer sheets: test PSNR, codebook usage and reconstruction fd_emoji per row, and the training curves of the
reconstruction loss and the batch perplexity; generator sheets: fd_emoji with its 95% interval, precision and
recall per row, and the training and test loss curves.
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

    fig, axes = plt.subplots(1, 4, figsize=(19, 3.8))
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
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
