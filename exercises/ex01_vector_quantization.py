"""Exercise 01: vector quantization by hand.

Fill in the four functions below (replace each `raise NotImplementedError(...)`), then check your work:

    pytest -m ex01

Each check says which part is wrong and what it expected. Notebook 01 builds every piece step by step;
minivar/vq.py holds the reference, but try it yourself first.
Shapes: z_flat (N, C) encoder outputs, codebook (K, C) code vectors, indices (N,) LongTensor.
"""

import torch


def nearest_code(z_flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Part 1. For each row of z_flat, the index of the nearest code by squared Euclidean distance. -> (N,)

    Hint: ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2 gives all N x K distances with one matrix product.
    """
    raise NotImplementedError("Part 1 (nearest_code) is not done yet: return the argmin over codes of ||z - e||^2")


def straight_through(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """Part 2. A tensor whose *value* is z_q but whose *gradient* flows to z unchanged (identity).

    Hint: one line with .detach().
    """
    raise NotImplementedError("Part 2 (straight_through) is not done yet: value of z_q, gradient of z")


def codebook_loss(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Part 3. Mean of ||sg[z] - e||^2: pulls the chosen codes e toward the encoder outputs z, never z toward e."""
    raise NotImplementedError("Part 3 (codebook_loss) is not done yet: mean squared error, z held fixed")


def commitment_loss(z: torch.Tensor, e: torch.Tensor, beta: float = 0.25) -> torch.Tensor:
    """Part 4. beta * mean of ||z - sg[e]||^2: keeps the encoder close to the codes it picks."""
    raise NotImplementedError("Part 4 (commitment_loss) is not done yet: beta * mean squared error, codes held fixed")
