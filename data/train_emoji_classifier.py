"""Train the emoji-group classifier behind `fd_emoji` and write data/emoji_classifier.pt.

    python data/train_emoji_classifier.py          # about a minute on 2 CPU cores

Trains on the emoji train split (random flips and 2-pixel shifts), reports accuracy on the test split and
stores it in the file with the weights and the config. Deterministic for a given seed and torch version.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minivar.checkpoint import save_checkpoint  # noqa: E402
from minivar.data import load_dataset  # noqa: E402
from minivar.emoji_classifier import WEIGHTS, EmojiClassifier, EmojiClassifierConfig  # noqa: E402


def all_images(ds):
    return torch.stack([ds[i][0] for i in range(len(ds))]), torch.tensor([ds[i][1] for i in range(len(ds))])


def augment(x, g):
    flip = torch.rand(len(x), generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
    return torch.roll(F.pad(x, (2, 2, 2, 2), value=1.0), (dy, dx), (2, 3))[:, :, 2:-2, 2:-2]  # white border


@torch.no_grad()
def accuracy(model, x, y):
    model.eval()
    return (torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)]) == y).float().mean().item()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=WEIGHTS)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    x_train, y_train = all_images(load_dataset("emoji", "train"))
    x_test, y_test = all_images(load_dataset("emoji", "test"))
    cfg = EmojiClassifierConfig()
    model = EmojiClassifier(cfg)
    steps_per_epoch = len(x_train) // 64
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=args.epochs * steps_per_epoch)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=g)
        for i in range(steps_per_epoch):
            idx = perm[i * 64:(i + 1) * 64]
            loss = F.cross_entropy(model(augment(x_train[idx], g)), y_train[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test accuracy {accuracy(model, x_test, y_test):.3f}")
    acc = accuracy(model, x_test, y_test)
    save_checkpoint({"model": model.state_dict(), "test_accuracy": acc, "train_seconds": time.time() - t0,
                     "config": {"model": "emoji_classifier", "model_config": model.config_dict(),
                                "epochs": args.epochs, "seed": args.seed, "torch": str(torch.__version__)}}, args.out)
    print(f"wrote {args.out}: test accuracy {acc:.3f} over {len(y_test)} images "
          f"(majority class: {(y_test == y_test.mode().values).float().mean():.3f}), {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
