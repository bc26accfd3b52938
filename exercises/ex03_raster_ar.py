"""Exercise 03: the pieces of a raster-order generator.

Fill in the four functions below, then check your work with

    pytest -m ex03

Notebook 03 builds each piece; minivar/transformer.py and minivar/sampling.py hold the reference (try it
yourself first). Shapes: logits (B, V); masks are bool with True = "may attend".
"""

import torch


def causal_mask(n: int) -> torch.Tensor:
    """Part 1. -> (n, n) bool: query i may attend to key j exactly when j <= i (raster order: the past and itself)."""
    raise NotImplementedError("Part 1 (causal_mask) is not done yet: a lower-triangular matrix of True")


def rope_2d(rows: int, cols: int, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Part 2. LlamaGen's 2-D rotary table -> (rows * cols, head_dim // 2, 2) of (cos, sin), raster order.

    freqs = 1 / base ** (arange(0, head_dim // 2, 2) / (head_dim // 2))   (head_dim // 4 frequencies)
    For the cell (r, c): the first head_dim // 4 channel pairs turn by r * freqs, the last head_dim // 4
    by c * freqs. Entry [p, i] = (cos(angle), sin(angle)) of pair i at position p = r * cols + c."""
    raise NotImplementedError("Part 2 (rope_2d) is not done yet: row angles, column angles, concatenate, cos/sin")


def top_k_top_p_filter(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Part 3. -> new logits with -inf outside the kept support (do not modify `logits` in place).
    top-k (k > 0): keep the k largest of each row. Then top-p (p < 1): sort the remaining descending and keep
    the smallest prefix whose softmax probabilities add up to at least p (always at least one token)."""
    raise NotImplementedError("Part 3 (top_k_top_p_filter) is not done yet: kth value threshold, then sort + cumsum")


def guidance_mix(cond_logits: torch.Tensor, uncond_logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Part 4. Classifier-free guidance on logits, as LlamaGen: move from the unconditional logits towards (and
    past, for scale > 1) the conditional ones by `scale`."""
    raise NotImplementedError("Part 4 (guidance_mix) is not done yet: uncond + scale * (cond - uncond)")
