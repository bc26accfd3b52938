"""Exercise 05, a solution: block-causal mask and VAR's guidance ramp."""

import torch


def block_causal_mask(scales):
    level = torch.cat([torch.full((s * s,), k) for k, s in enumerate(scales)])
    return level[:, None] >= level[None, :]


def guidance_ramp(cond_logits, uncond_logits, guidance, k, n_scales):
    s = 1 + (guidance - 1) * k / (n_scales - 1)
    return uncond_logits + s * (cond_logits - uncond_logits)
