"""Build the bundled offline `emoji` dataset (data/emoji.npz) from two Debian packages.

    apt-get install fonts-noto-color-emoji unicode-data
    python data/build_emoji.py            # writes data/emoji.npz

Every *fully-qualified* emoji listed in Unicode's emoji-test.txt is drawn with the Noto Color Emoji font
(colour bitmap glyphs, drawn at the font's only bitmap size, 109 px), cropped to the glyph's opaque
pixels, centred on a square, composited on white and downsampled (Lanczos) to 32x32 and 64x64.
The label is the emoji's Unicode group (9 groups; the "Component" group has no fully-qualified entries).
A stratified 90/10 train/test split is drawn once with a fixed seed and stored in the file, so it never
changes when the file is rebuilt. Sequences the font cannot draw as one glyph (the layout engine leaves
them as several glyphs side by side) are skipped and counted.
"""

import argparse
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
SIZES = (32, 64)
TEST_FRACTION = 0.1
SEED = 0


def parse_emoji_test(path):
    """Yield (string, group name, short name) for every fully-qualified entry of emoji-test.txt."""
    group = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            codes, rest = line.split(";", 1)
            status, comment = rest.split("#", 1)
            if status.strip() != "fully-qualified":
                continue
            text = "".join(chr(int(c, 16)) for c in codes.split())
            name = comment.strip().split(" ", 2)[2]  # "😀 E1.0 grinning face" -> "grinning face"
            yield text, group, name


def render(text, font):
    """Draw one emoji; return an RGB uint8 square (glyph centred on white), or None if it is not one glyph."""
    canvas = Image.new("RGBA", (512, 256), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((8, 8), text, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        return None
    w, h = box[2] - box[0], box[3] - box[1]
    if w > 1.3 * 136 or h > 1.3 * 136:  # one glyph is 136x128 at 109 px; wider means several glyphs
        return None
    glyph = canvas.crop(box)
    side = max(w, h)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - w) // 2, (side - h) // 2))
    return square.convert("RGB")


def stratified_split(labels, test_fraction, seed):
    """A boolean mask, True for test: `test_fraction` of each class, drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        is_test[idx[: max(1, round(test_fraction * len(idx)))]] = True
    return is_test


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "emoji.npz")
    args = parser.parse_args()
    for p, pkg in ((EMOJI_TEST, "unicode-data"), (FONT, "fonts-noto-color-emoji")):
        if not p.exists():
            raise SystemExit(f"{p} not found: install it with `apt-get install {pkg}`")

    font = ImageFont.truetype(str(FONT), 109)  # the font's only bitmap strike
    images = {s: [] for s in SIZES}
    labels, names, groups, skipped = [], [], [], []
    for text, group, name in parse_emoji_test(EMOJI_TEST):
        img = render(text, font)
        if img is None:
            skipped.append(name)
            continue
        if group not in groups:
            groups.append(group)
        for s in SIZES:
            images[s].append(np.asarray(img.resize((s, s), Image.LANCZOS)))
        labels.append(groups.index(group))
        names.append(name)

    labels = np.array(labels, dtype=np.int64)
    is_test = stratified_split(labels, TEST_FRACTION, SEED)
    arrays = {f"images{s}": np.stack(images[s]) for s in SIZES}  # (N, s, s, 3) uint8, HWC
    np.savez_compressed(args.out, labels=labels, is_test=is_test, class_names=np.array(groups),
                        names=np.array(names), **arrays)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()[:16]
    print(f"wrote {args.out}: {len(labels)} emoji ({is_test.sum()} test), {len(groups)} groups, "
          f"{len(skipped)} skipped (not one glyph), {args.out.stat().st_size / 1e6:.1f} MB, sha256 {digest}")
    for i, g in enumerate(groups):
        print(f"  {i} {g}: {(labels == i).sum()}")


if __name__ == "__main__":
    main()
