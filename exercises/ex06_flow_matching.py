"""Exercise 06: the three moves of FlowAR — learn a velocity, follow it, climb to the next scale.

Fill in the three functions below, then check your work with

    pytest -m ex06

Notebook 06 builds each piece; minivar/flow_matching.py and minivar/flowar.py hold the reference (try it yourself
first). Shapes: tokens (B, N, C); conditions z (B, N, D); times t (B,); latents (B, C, s, s).
"""

import torch


def flow_loss(head, x: torch.Tensor, z: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Part 1. The flow-matching loss of a velocity network, one number per sample: (B,).

    The straight path from the data x (t = 0) to the noise (t = 1) has a velocity that does not depend on t.
    Put x_t on that path, ask head(x_t, t, z) for the velocity, and return the mean squared error over every
    dimension but the batch."""
    raise NotImplementedError("Part 1 (flow_loss) is not done yet")


def guided_euler_step(head, x: torch.Tensor, t: float, t_next: float, z: torch.Tensor, scale: float) -> torch.Tensor:
    """Part 2. One Euler step of the ODE from time t to t_next (t_next < t) with classifier-free guidance.

    x and z hold 2B rows: the first B are the samples with their class, the last B the same samples with the null
    class. Feed the conditional states x[:B] twice (once with each half of z), mix the two velocities with the
    course's one guidance convention (scale 1 = no guidance), and move both halves by the mixed velocity.
    -> x at t_next, same shape as x."""
    raise NotImplementedError("Part 2 (guided_euler_step) is not done yet")


def next_scale_input(latent_k: torch.Tensor, full: int, s_next: int) -> torch.Tensor:
    """Part 3. What FlowAR's transformer reads for the next scale, given scale k's latents (B, C, s_k, s_k): the
    latents blown up to the full latent size (bicubic), then averaged down to the next scale's size (area).
    -> (B, C, s_next, s_next)"""
    raise NotImplementedError("Part 3 (next_scale_input) is not done yet")


def heun_step(head, x: torch.Tensor, t: float, t_next: float, z: torch.Tensor) -> torch.Tensor:
    """Part 4 (a second-order step; the notebook runs it only through the package). One step of Heun's method for
    dx/dt = head(x, t, z) from t to t_next, no guidance: an Euler step gives a first guess of x at t_next; the
    velocity there and the one at the start are averaged, and the step is taken again from x with that average.
    head takes t as a tensor of one time per sample, shape (B,). -> x at t_next, same shape as x."""
    raise NotImplementedError("Part 4 (heun_step) is not done yet")
