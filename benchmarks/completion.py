"""Where does each generator lose the image? Complete test emoji from their first tokens and measure what is left.

    python benchmarks/completion.py             # the shipped emoji-var and emoji-raster (about 10 min on one core)
    python benchmarks/completion.py --repeats 1 --var runs/my-var --raster runs/my-raster

Each test emoji is encoded by the generator's own tokenizer. VAR is given its first j scales (j = 0: nothing, a
plain class-conditional sample; j = 6: every scale, the tokenizer's reconstruction) and samples the rest, scale by
scale, with its guidance ramp; the raster GPT is given its first r rows of tokens and samples the rest, token by
token. The completions (`--repeats` per test emoji, other random draws) are scored by fd_emoji against the test
emoji, with the 95% interval. Read side by side, the two curves say which part of the sampling costs the quality:

- VAR given scales 1..5 samples only its last 8x8 scale, 64 tokens drawn in one step independently of each other;
  the raster GPT given nothing draws the same 64 tokens one at a time, each seeing the ones before it. If the first
  is worse than the second, VAR loses the image in the parallel draw of its finest scale, not in its coarse layout.
- The coarse scales' share: how far fd falls when they are given (what sampling them costs).

Rows are appended to <out>/completion.csv (default benchmarks/results/) with the command, machine and date; a figure
(fd against the number of tokens sampled, and one test emoji completed at every level) goes to <out>/completion.png.
"""

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from common import RESULTS, record  # noqa: E402

from minivar import load  # noqa: E402
from minivar.data import dataset_labels, load_dataset  # noqa: E402
from minivar.metrics import fd_emoji_ci  # noqa: E402
from minivar.viz import save_figure


@torch.no_grad()
def completions(model, images, labels, given: int, seed: int, batch_size=100) -> torch.Tensor:
    """Decoded completions (N, 3, H, W) in [-1, 1] of `images` given their first `given` scales (a list of maps:
    VAR) or rows (one map: raster), with the model's default guidance."""
    g = torch.Generator(model.device).manual_seed(seed)
    out = []
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        codes = model.tokenizer.encode(x.to(model.device))
        if isinstance(codes, list):  # multi-scale: the first `given` scales
            prefix = codes[:given]
        else:  # a token map: its first `given` rows, in raster order
            prefix = codes[:, :given].flatten(1) if given else None
        out.append(model.tokenizer.decode(model.generate(y.to(model.device), generator=g, prefix=prefix))
                   .float().clamp(-1, 1).cpu())
    return torch.cat(out)


def levels(model):
    """(what is given, tokens given, tokens sampled, sequential steps left) for each level of a model."""
    fmt = model.tokenizer.code_format()
    if "scales" in fmt:
        scales = list(fmt["scales"])
        total = sum(s * s for s in scales)
        return [(j, f"scales 1..{j}" if j else "nothing", sum(s * s for s in scales[:j]),
                 total - sum(s * s for s in scales[:j]), len(scales) - j) for j in range(len(scales) + 1)]
    grid = fmt["grid"]
    return [(r, f"rows 1..{r}" if r else "nothing", r * grid, (grid - r) * grid, (grid - r) * grid)
            for r in range(grid + 1)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--var", default="pretrained:emoji-var")
    p.add_argument("--raster", default="pretrained:emoji-raster")
    p.add_argument("--repeats", type=int, default=2, help="completions per test emoji (each another random draw)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    test = load_dataset("emoji", "test", image_size=32)
    real = torch.stack([test[i][0] for i in range(len(test))])
    labels = dataset_labels(test)
    images, ys = real.repeat(args.repeats, 1, 1, 1), labels.repeat(args.repeats)
    rows, strips = [], {}
    show = int((labels == labels.unique()[0]).nonzero()[0])  # the first test emoji: its completions in the figure
    for name, run in (("VAR", args.var), ("raster", args.raster)):
        model = load(run).eval()
        strips[name] = []
        for level, what, n_given, n_sampled, steps in levels(model):
            t0 = time.time()
            done = completions(model, images, ys, level, args.seed)
            fd, low, high = fd_emoji_ci(done, real)
            rows.append({"model": name, "run": run, "given": what, "tokens_given": n_given, "tokens_sampled":
                         n_sampled, "steps_left": steps, "n": len(done), "fd_emoji": round(fd, 3),
                         "fd_low": round(low, 3), "fd_high": round(high, 3), "seconds": round(time.time() - t0, 1)})
            strips[name].append(done[show])
            print(f"{name:<7} given {what:<12} ({n_sampled:>3} tokens to sample in {steps:>2} steps): "
                  f"fd_emoji {fd:.2f} [{low:.2f}, {high:.2f}]", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    record(args.out / "completion.csv", rows, torch.device("cpu"))
    plot(rows, strips, real[show], args.out / "completion.png")
    print(f"recorded in {args.out / 'completion.csv'}; figure {args.out / 'completion.png'}")


def plot(rows, strips, original, path):
    fig = plt.figure(figsize=(12, 6.5))
    ax = fig.add_axes([0.07, 0.42, 0.88, 0.52])
    for name, colour in (("VAR", "tab:orange"), ("raster", "tab:blue")):
        r = [row for row in rows if row["model"] == name]
        x = [row["tokens_sampled"] for row in r]
        ax.plot(x, [row["fd_emoji"] for row in r], "o-", color=colour, label=f"{name} (given its first "
                f"{'scales' if name == 'VAR' else 'rows'})")
        ax.fill_between(x, [row["fd_low"] for row in r], [row["fd_high"] for row in r], color=colour, alpha=0.2)
        for row in r:
            ax.annotate(row["given"], (row["tokens_sampled"], row["fd_emoji"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("tokens left to sample (the rest are the test emoji's own; VAR's last 64 are drawn in one step, "
                  "the raster GPT's one at a time)")
    ax.set_ylabel("fd_emoji of the completions (95% interval)")
    ax.set_title("Where the image is lost: completing test emoji from their first tokens")
    ax.legend()
    ax.grid(alpha=0.3)
    for i, name in enumerate(("VAR", "raster")):
        strip = strips[name]
        for j, img in enumerate([original] + strip):
            a = fig.add_axes([0.07 + j * 0.085, 0.2 - i * 0.16, 0.075, 0.13])
            a.imshow(((img.permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy())
            a.set_xticks([])
            a.set_yticks([])
            if j == 0:
                a.set_ylabel(name, fontsize=9)
            unit = "scales" if name == "VAR" else "rows"
            a.set_title("test emoji" if j == 0 else f"{unit} 1..{j - 1} given" if j > 1 else "nothing given",
                        fontsize=7)
    save_figure(fig, path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
