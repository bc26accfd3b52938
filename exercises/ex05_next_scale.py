"""Exercise 05: the two rules that make VAR's transformer next-scale.

Fill in the two functions below, then check your work with

    pytest -m ex05

Notebook 05 builds each piece; minivar/var.py holds the reference (try it yourself first).
"""

import torch


def block_causal_mask(scales: tuple) -> torch.Tensor:
    """Part 1. -> (L, L) bool with L = sum(s * s for s in scales), True = may attend. The tokens are laid out
    scale after scale (s_1^2 tokens of scale 1, then s_2^2 of scale 2, ...). A query may attend to a key when the
    key's scale is the query's scale or a coarser one."""
    raise NotImplementedError("Part 1 (block_causal_mask) is not done yet: a scale index per token, then compare")


def guidance_ramp(cond_logits: torch.Tensor, uncond_logits: torch.Tensor, guidance: float, k: int, n_scales: int):
    """Part 2. VAR's guided logits at scale k (0 = coarsest) of n_scales. The guidance scale s_k grows linearly
    with k, from 1 (no guidance) at the first scale to `guidance` at the last, and the logits are minivar's one
    convention uncond + s_k * (cond - uncond)."""
    raise NotImplementedError("Part 2 (guidance_ramp) is not done yet: s_k grows linearly with k")
