"""Pictures: image grids, token maps, loss curves, per-scale panels, and sliders over any of them (`explorer`).
Everything returns or saves a figure you can look at."""

import io
from pathlib import Path

import numpy as np
import torch

from .data import to_uint8_images
from .files import atomic_write


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 1) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> one (rows*H, nrow*W, 3) uint8 array, white gaps between images."""
    x = to_uint8_images(images)
    B, H, W, _ = x.shape
    ncol = min(nrow, B)
    nrows = -(-B // ncol)
    grid = np.full((nrows * (H + pad) - pad, ncol * (W + pad) - pad, 3), 255, np.uint8)
    for i in range(B):
        r, c = divmod(i, ncol)
        grid[r * (H + pad): r * (H + pad) + H, c * (W + pad): c * (W + pad) + W] = x[i]
    return grid


PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def check_picture_path(path, option="--out") -> Path:
    """A picture's path, checked before any work: an image suffix, not an existing folder."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; name the picture file to write, e.g. {path / 'samples.png'}")
    if path.suffix.lower() not in PICTURE_SUFFIXES:
        raise ValueError(f"{option} {path} must end in one of {', '.join(PICTURE_SUFFIXES)} (the suffix picks the "
                         f"picture format), e.g. {path.with_suffix('.png')}")
    return path


def save_grid(path, images: torch.Tensor, nrow: int = 8, scale: int = 2) -> Path:
    """Save a grid picture (PNG, or the format the suffix names), each image enlarged `scale` times (nearest) so
    small images stay visible. Written atomically: an earlier picture at `path` is replaced whole or kept."""
    from PIL import Image
    path = check_picture_path(path, "the picture")
    img = Image.fromarray(image_grid(images, nrow))
    fmt = Image.registered_extensions()[path.suffix.lower()]
    with atomic_write(path, "wb") as fh:
        img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(fh, format=fmt)
    return path


def save_figure(fig, path, dpi: int = 100) -> Path:
    """fig.savefig, written atomically (the format from the suffix: png, pdf, svg, ...)."""
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format=path.suffix.lstrip(".").lower() or "png", dpi=dpi)
    return path


def show_grid(images: torch.Tensor, nrow: int = 8, title: str = None, ax=None, figsize=None):
    import matplotlib.pyplot as plt
    grid = image_grid(images, nrow)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize or (min(12, grid.shape[1] / 25), min(12, grid.shape[0] / 25)))
    ax.imshow(grid)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def show_class_grid(images: torch.Tensor, class_names, title: str = None, ax=None, figsize=None):
    """Samples laid out one column per class, the class names written above the columns.

    images (rows * C, 3, H, W) in row-major order: the first C images are one sample of each class, the next C the
    second sample of each... (what model.generate(torch.arange(C).repeat(rows)) returns)."""
    import matplotlib.pyplot as plt
    C = len(class_names)
    if len(images) % C:
        raise ValueError(f"{len(images)} images do not fill whole rows of {C} classes")
    grid = image_grid(images, nrow=C)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize or (min(14, 1.3 * C), 1.3 * len(images) // C + 0.6))
    ax.imshow(grid)
    ax.set_xticks([(i + 0.5) * grid.shape[1] / C for i in range(C)])
    ax.set_xticklabels(list(class_names), fontsize=8, rotation=30 if max(map(len, class_names)) > 8 else 0)
    ax.xaxis.tick_top()
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, pad=24)
    return ax


def plot_token_map(tokens: torch.Tensor, ax=None, codebook_size=None, cmap="tab20"):
    """One (h, w) token map as a colour image with the indices written in (small maps only)."""
    import matplotlib.pyplot as plt
    t = tokens.cpu().numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(t % 20 if cmap == "tab20" else t, cmap=cmap, vmin=0, vmax=19 if cmap == "tab20" else codebook_size)
    if t.shape[0] <= 8:
        for (i, j), v in np.ndenumerate(t):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def plot_curves(records: list, keys=("loss",), path=None, title=None, ax=None):
    """Plot metrics logged as [{"step": s, key: value, ...}] (the run's metrics.jsonl); save if `path`."""
    import matplotlib.pyplot as plt
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in keys:
        pts = [(r["step"], r[k]) for r in records if k in r]
        if pts:
            ax.plot(*zip(*pts), label=k)
    ax.set_xlabel("step")
    ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if path is not None:
        ax.figure.tight_layout()
        save_figure(ax.figure, path)
        if own:
            plt.close(ax.figure)
    return ax


def plot_scales(per_scale: list, scales, row_labels=None, path=None, title=None, column_titles=None, compare=None):
    """A picture of every scale: per_scale[k] (B, 3, H, W) is the image decoded after scale k (VAR's cumulative
    reconstruction); rows = the B samples, columns = the scales, coarse to fine. Saved to `path` if given.
    compare=[(heading, per_scale), ...]: further models' panels drawn to the right, same rows and scales; the first
    panel's heading is then `title` and the figure has no overall title."""
    column_titles = column_titles or [f"{s}×{s}" for s in scales]
    import matplotlib
    import matplotlib.pyplot as plt
    if path is not None and not matplotlib.get_backend().lower().startswith(("module://", "nbagg", "ipympl")):
        plt.switch_backend("Agg")  # command-line runs: no display needed
    panels = [(title, per_scale)] + list(compare or [])
    B, K = per_scale[0].shape[0], len(per_scale)
    width = 1.3 * K + (1.2 if row_labels else 0.2)
    fig = plt.figure(figsize=(width * len(panels), 1.3 * B + 0.5), layout="constrained")
    subfigures = fig.subfigures(1, len(panels), squeeze=False)[0] if len(panels) > 1 else [fig]
    for panel, (heading, images) in zip(subfigures, panels):
        axes = panel.subplots(B, K, squeeze=False)
        for k in range(K):
            for b in range(B):
                ax = axes[b, k]
                ax.imshow(to_uint8_images(images[k][b:b + 1])[0], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if b == 0:
                    ax.set_title(column_titles[k], fontsize=9)
                if k == 0 and row_labels:
                    ax.set_ylabel(row_labels[b], fontsize=8, rotation=0, ha="right", va="center")
        if heading:
            panel.suptitle(heading, fontsize=10)
    if path is not None:
        save_figure(fig, path)
        plt.close(fig)
    return fig


@torch.no_grad()
def generation_frames(model, label: int, seed: int = 0, guidance=None, ode_frames: int = 4) -> list:
    """One sample of class `label`, drawn by `model` and shown as it is made: [(caption, image (3, H, W))], in the
    order of the sampler's steps.

    Raster GPT and RAR (both sample in raster order): the final image with the tokens not yet drawn greyed out,
    after each row of tokens (a token, once drawn, is never changed, so what is shown is what has been decided).
    VAR: the image decoded after each scale. FlowAR: the image decoded after each scale's ODE (the coarse scales'
    latents blown up to full size, as the next scale reads them), then `ode_frames` states x_t inside the last
    scale's ODE (noise at t = 1 to the sample at t = 0)."""
    g = torch.Generator(model.device).manual_seed(seed)
    labels = torch.tensor([label], device=model.device)
    tok, kind = model.tokenizer, model.kind
    if kind in ("raster", "rar"):
        final = tok.decode(model.generate(labels, guidance=guidance, generator=g)).float().cpu()[0]
        grid = model.cfg.grid
        patch = final.shape[-1] // grid
        frames = []
        for rows in range(1, grid + 1):
            shown = torch.full_like(final, 0.6)  # light grey: not drawn yet
            shown[:, :rows * patch] = final[:, :rows * patch]
            frames.append((f"{rows * grid} tokens", shown))
        return frames
    if kind == "var":
        maps = model.generate(labels, guidance=guidance, generator=g)
        images = tok.decode_scales(maps, every_scale=True)  # the image after each scale's tokens
        return [(f"{s}x{s}", img.float().cpu()[0]) for s, img in zip(model.cfg.scales, images)]
    if kind == "flowar":
        from .flowar import next_scale_input
        trace = []
        model.generate(labels, guidance=guidance, generator=g, trace=trace)  # every scale's latent and ODE path
        full = model.cfg.grid
        frames = [(f"{s['latent'].shape[-1]}x{s['latent'].shape[-1]}",
                   tok.decode(next_scale_input(s["latent"], full, full)).float().cpu()[0]) for s in trace]
        last = trace[-1]["path"]
        picks = sorted({round(i * (len(last) - 1) / max(1, ode_frames - 1)) for i in range(ode_frames)})
        ode = [(f"last scale, t={last[i][0]:.2f}", tok.decode(last[i][1]).float().cpu()[0]) for i in picks]
        return frames[:-1] + ode
    raise ValueError(f"generation_frames draws raster, rar, var and flowar generators, not {kind!r}")


def figure_png(fig, dpi=100) -> bytes:
    """A matplotlib figure as PNG bytes (for an ipywidgets.Image)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def explorer(draw, **controls):
    """Widgets (sliders, dropdowns, ...) beside the picture `draw(**their values)` returns (a matplotlib figure or
    Axes), redrawn whenever one moves. Display the returned box: `display(explorer(draw, k=IntSlider(...)))`.

    The picture is an ipywidgets.Image holding the figure as PNG, not an Output widget capturing plt.show():
    notebook executors (nbclient, behind nbmake and nbconvert) mirror an Output widget by sending messages to the
    kernel on the very channel where they wait for the cell's reply, which can leave a headless run waiting until
    its timeout (jupyter/nbclient#312); an Image is plain widget state, which they only record.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    image = widgets.Image(format="png")

    def redraw(_=None):
        fig = draw(**{name: control.value for name, control in controls.items()})
        fig = getattr(fig, "figure", fig)  # an Axes -> its figure
        image.value = figure_png(fig)
        plt.close(fig)  # shown in the widget only, not again below the cell

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    row = widgets.HBox(list(controls.values()), layout=widgets.Layout(flex_flow="row wrap"))
    return widgets.VBox([row, image])
