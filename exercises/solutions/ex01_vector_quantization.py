"""Exercise 01, solutions (the graders in exercises/test_ex01.py run against these in CI)."""

import torch


def nearest_code(z_flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    z, e = z_flat.float(), codebook.float()
    squared = (z * z).sum(-1, keepdim=True) + (e * e).sum(-1)[None] - 2.0 * torch.mm(z, e.t())
    return squared.argmin(dim=-1)


def vq_forward(z: torch.Tensor, codebook: torch.Tensor, beta: float = 0.25) -> tuple:
    B, C, H, W = z.shape
    rows = z.movedim(1, -1).reshape(-1, C)  # one C-vector per position, in (b, h, w) order
    k = nearest_code(rows, codebook)
    chosen = codebook[k]
    move_codes = (chosen - rows.detach()).pow(2).mean()
    move_encoder = (rows - chosen.detach()).pow(2).mean()
    passed = rows + (chosen - rows).detach()  # value: the codes; gradient: identity to z
    z_q = passed.reshape(B, H, W, C).movedim(-1, 1)
    return z_q, k.reshape(B, H, W), move_codes + beta * move_encoder


def vq_loss_gradient(beta: float, n: int) -> tuple:
    # d/dz of beta * sum((z - e)^2) / n is 2 beta (z - e) / n; the codebook term's gradient stops at sg[z]
    return 2.0 * beta / n, 2.0 / n
