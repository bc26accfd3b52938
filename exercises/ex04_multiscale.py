"""Exercise 04: VAR's multi-scale residual quantization.

Fill in the three functions below, then check your work with

    pytest -m ex04

Notebook 04 builds each piece; minivar/msvq.py holds the reference (try it yourself first). To keep it short,
there is no Phi refinement here (phi_ratio = 0): a scale's contribution is just its code map, bicubic-upsampled.
Shapes: f (B, C, h, w) latent; codebook (K, C); scales e.g. (1, 2, 4, 8) ending at h (= w).
Useful: F.interpolate(x, size=(s, s), mode="area") to go down, mode="bicubic" to go up.
"""

import torch
import torch.nn.functional as F  # noqa: F401  (you will need it)


def residual_encode(f: torch.Tensor, codebook: torch.Tensor, scales: tuple) -> list:
    """Part 1. -> [(B, s, s) LongTensor for s in scales], coarsest first.
    residual = f; for each scale: downsample the residual to (s, s) (not at the last scale), take each vector's
    nearest code (squared Euclidean distance), upsample the chosen codes back to (h, w), subtract from residual."""
    raise NotImplementedError("Part 1 (residual_encode) is not done yet")


def teacher_forcing_input(tokens: list, codebook: torch.Tensor, scales: tuple) -> torch.Tensor:
    """Part 2. -> (B, L - scales[0]**2, C): what the transformer reads to predict scales 2..K.
    f_hat = 0; for each scale k < K: f_hat += upsampled codes of scale k; then append f_hat area-downsampled to
    scale k+1's size, flattened to (B, s_{k+1}**2, C) in row-major order. Concatenate along dim 1."""
    raise NotImplementedError("Part 2 (teacher_forcing_input) is not done yet")


def first_scale(f: torch.Tensor, codebook: torch.Tensor) -> tuple:
    """Part 3 (derive it; the notebook does not show it). VAR's schedules start at a 1x1 scale. What does that one
    token quantize, and what does it leave for scale 2? -> (token (B,) long, residual (B, C, h, w)): the token
    residual_encode would pick at a 1x1 first scale, and f minus that token's contribution.

    Write it without F.interpolate: what is an "area" average of an h x w map down to 1 x 1, and what does
    upsampling a 1 x 1 map to h x w give, whatever the mode? (Then: why is a 1x1 first scale a good start?)"""
    raise NotImplementedError("Part 3 (first_scale) is not done yet")
