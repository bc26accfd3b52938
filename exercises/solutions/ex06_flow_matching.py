"""Exercise 06, a solution: the flow-matching loss, a guided Euler step, the next-scale input."""

import torch
import torch.nn.functional as F


def flow_loss(head, x, z, t, noise):
    t_ = t.view(-1, *[1] * (x.ndim - 1))
    x_t = (1 - t_) * x + t_ * noise
    return (head(x_t, t, z) - (noise - x)).pow(2).flatten(1).mean(1)


def guided_euler_step(head, x, t, t_next, z, scale):
    half = x.shape[0] // 2
    times = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
    v = head(torch.cat([x[:half], x[:half]]), times, z)
    cond, uncond = v.chunk(2)
    mixed = uncond + scale * (cond - uncond)
    return x + (t_next - t) * torch.cat([mixed, mixed])


def next_scale_input(latent_k, full, s_next):
    up = F.interpolate(latent_k, size=(full, full), mode="bicubic")
    return F.interpolate(up, size=(s_next, s_next), mode="area")


def heun_step(head, x, t, t_next, z):
    times = lambda s: torch.full((x.shape[0],), float(s), dtype=x.dtype, device=x.device)  # noqa: E731
    d_start = head(x, times(t), z)
    guess = x + (t_next - t) * d_start
    return x + (t_next - t) * 0.5 * (d_start + head(guess, times(t_next), z))
