"""A training run read back: its model, its TrainConfig and (for a generator) its tokenizer.

    model, cfg, tokenizer = load_run("runs/emoji-raster")     # or "pretrained:emoji-raster"

Beside the checkpoint code (checkpoint.py writes and reads the files, models.load makes the model); this is the one
place that also turns the saved training settings back into a TrainConfig, so it sits above config.py (and
checkpoint.py, below models.py, cannot hold it).
"""

from .checkpoint import load_checkpoint
from .config import TrainConfig
from .models import Generator, checkpoint_path, load, model_from_checkpoint
from .recipes import RECIPES


def load_run(run_dir, map_location="cpu"):
    """A finished (or checkpointed) run -> (model in eval mode, its TrainConfig, its tokenizer or None)."""
    path = checkpoint_path(run_dir)
    ckpt = load_checkpoint(path, map_location)
    model = model_from_checkpoint(ckpt, path, map_location)
    cfg = TrainConfig.from_saved(ckpt["config"])
    return model, cfg, model.tokenizer if cfg.tokenizer else None


def load_tokenizer(cfg: TrainConfig, device):
    """A generator's frozen tokenizer, loaded once; a missing run names the recipe that trains it."""
    path = checkpoint_path(cfg.tokenizer)  # a shipped one ("pretrained:NAME") is checked here
    if not path.exists():
        name = path.parent.name
        how = f"`python -m minivar train {name}`" if name in RECIPES else \
            "e.g. `python -m minivar train emoji-vqvae-l2` (`emoji-msvq` for VAR)"
        raise FileNotFoundError(f"no tokenizer checkpoint at {path}: train it first, {how}, "
                                f"or point --set tokenizer=... at a run folder")
    tokenizer = load(path, device)
    if isinstance(tokenizer, Generator):
        raise ValueError(f"{cfg.tokenizer} is a {tokenizer.kind} run, a generator, not a tokenizer: --set tokenizer= "
                         f"names the tokenizer whose codes the generator learns (e.g. pretrained:emoji-msvq for VAR, "
                         f"pretrained:emoji-vqvae-l2 for raster)")
    return tokenizer.requires_grad_(False)


__all__ = ["load_run", "load_tokenizer"]
