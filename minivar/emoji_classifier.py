"""A small CNN classifier of the 9 emoji groups, whose features define `fd_emoji`.

FID compares Inception-v3 features of real and generated images; Inception needs a download and knows
nothing of 32x32 emoji. For CPU work minivar ships this small classifier instead (data/emoji_classifier.pt,
trained by `python data/train_emoji_classifier.py`, its test accuracy recorded in the file and in
data/README.md). `fd_emoji` is the Frechet distance between its 128-d features of two image sets: a proxy
that moves the way FID does (lower = closer distributions), not a number comparable to published FIDs.
"""

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import DATA_DIR

WEIGHTS = DATA_DIR / "emoji_classifier.pt"


@dataclass
class EmojiClassifierConfig:
    num_classes: int = 9
    width: int = 32  # channels of the first block; doubled at each of the 3 downsamplings
    feature_dim: int = 128  # the features fd_emoji compares


class EmojiClassifier(nn.Module):
    def __init__(self, cfg: EmojiClassifierConfig = None):
        super().__init__()
        self.cfg = cfg = cfg or EmojiClassifierConfig()
        w = cfg.width
        layers, c = [], 3
        for c_out in (w, 2 * w, 4 * w):  # 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(c, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                       nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
            c = c_out
        self.body = nn.Sequential(*layers)
        self.features_head = nn.Linear(c, cfg.feature_dim)
        self.classify = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 32, 32) in [-1, 1] -> (B, feature_dim)."""
        if images.shape[-2:] != (32, 32):  # 64x64 emoji (or others) are compared at the classifier's size
            images = F.interpolate(images, size=(32, 32), mode="area")
        h = self.body(images).mean((2, 3))  # global average pool, (B, 4w)
        return F.relu(self.features_head(h))

    def forward(self, images):
        return self.classify(self.features(images))

    def config_dict(self):
        return asdict(self.cfg)


def load_emoji_classifier(path: Path = WEIGHTS, map_location="cpu") -> EmojiClassifier:
    from .checkpoint import load_checkpoint
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} not found: it ships with the repository; rebuild it with "
                                f"`python data/train_emoji_classifier.py` (about a minute on a CPU)")
    ckpt = load_checkpoint(path, map_location)
    model = EmojiClassifier(EmojiClassifierConfig(**ckpt["config"]["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.eval()
