"""Exercise 05, a solution: block-causal mask and VAR's guidance ramp."""

import torch


def block_causal_mask(scales):
    level = torch.cat([torch.full((s * s,), k) for k, s in enumerate(scales)])
    return level[:, None] >= level[None, :]


def cfg_ramp(cond_logits, uncond_logits, cfg, k, n_scales):
    t = cfg * k / (n_scales - 1)
    return (1 + t) * cond_logits - t * uncond_logits
