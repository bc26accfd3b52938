"""Exercise 03, a solution: the pieces of a raster-order generator."""

import torch


def causal_mask(n: int) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril()


def rope_2d(rows: int, cols: int, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    half = head_dim // 2
    freqs = 1.0 / base ** (torch.arange(0, half, 2).float() / half)  # (head_dim/4,)
    r, c = torch.meshgrid(torch.arange(rows).float(), torch.arange(cols).float(), indexing="ij")
    angles = torch.cat([r[..., None] * freqs, c[..., None] * freqs], dim=-1).reshape(rows * cols, half)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def top_k_top_p_filter(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    out = logits.clone()
    if 0 < top_k < out.shape[-1]:
        kth = out.topk(top_k, dim=-1).values[..., -1:]
        out[out < kth] = float("-inf")
    if top_p < 1.0:
        sorted_logits, order = out.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the strictly more likely tokens
        drop = before >= top_p
        drop[..., 0] = False
        out = out.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return out


def guidance_mix(cond_logits: torch.Tensor, uncond_logits: torch.Tensor, scale: float) -> torch.Tensor:
    return uncond_logits + scale * (cond_logits - uncond_logits)
