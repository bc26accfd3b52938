"""The scale schedule that VAR's tokenizer, VAR and FlowAR share: scale k is an s_k x s_k map, the scales are
concatenated coarsest first into one sequence of L = sum s_k^2 positions, and a position may look at its own scale and
every coarser one.

    maps = split_scales(flat, (1, 2, 4))      # (B, 21) -> [(B, 1, 1), (B, 2, 2), (B, 4, 4)]
    mask = block_causal_mask((1, 2, 4))       # (21, 21) bool, True = may attend

Its own file so that none of the three imports another's internals for it.
"""

import torch


def split_scales(flat: torch.Tensor, scales) -> list:
    """(B, L) tokens, all scales flattened coarsest first -> [(B, s_k, s_k)]."""
    sizes = [s * s for s in scales]
    if flat.ndim != 2 or flat.shape[1] != sum(sizes):
        raise ValueError(f"expected flat multi-scale tokens (B, {sum(sizes)}) for scales {tuple(scales)}, "
                         f"got {tuple(flat.shape)}")
    return [t.reshape(-1, s, s) for t, s in zip(flat.split(sizes, dim=1), scales)]


def block_causal_mask(scales) -> torch.Tensor:
    """(L, L) bool, True = may attend: query at scale i sees keys at every scale j <= i."""
    level = torch.cat([torch.full((s * s,), k) for k, s in enumerate(scales)])
    return level[:, None] >= level[None, :]


__all__ = ["split_scales", "block_causal_mask"]
