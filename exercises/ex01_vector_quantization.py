"""Exercise 01: a vector-quantization layer, from the math.

Fill in the two functions below (replace each `raise NotImplementedError(...)`), then check your work:

    pytest -m ex01

Each check says which part is wrong and what it expected. Notebook 01 shows the ideas one at a time on 2-D points;
here you put them together into the layer a VQ-VAE uses, on feature maps. Work from the equations, not from the
notebook's cells (minivar/vq.py holds the reference; the graders refuse a file that imports it).

Shapes: z (B, C, H, W) encoder outputs, codebook (K, C) code vectors.
"""

import torch


def nearest_code(z_flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Part 1. k_i = argmin_k ||z_i - e_k||^2 for every row z_i of z_flat (N, C). -> (N,) long.

    Computing all N x K differences as an (N, K, C) tensor works but needs N*K*C memory; expand the square."""
    raise NotImplementedError("Part 1 (nearest_code) is not done yet")


def vq_forward(z: torch.Tensor, codebook: torch.Tensor, beta: float = 0.25) -> tuple:
    """Parts 2 and 3. The forward pass of a VQ layer (van den Oord et al. 2017, eq. 3) on a feature map.

    Every position (b, :, h, w) of z is one C-dimensional vector z_i; e_i is its nearest code. Return
    (z_q, indices, loss):
      z_q      (B, C, H, W): the codes e_i laid out like z, whose forward value is e_i but whose gradient reaches z
               unchanged (the straight-through estimator: the decoder's gradient skips the argmin);
      indices  (B, H, W) long: k_i at each position;
      loss     scalar: ||sg[z] - e||^2 + beta ||z - sg[e]||^2, each term a mean over all B*H*W*C numbers
               (sg = stop-gradient): the first moves only the codes, the second only the encoder.
    Part 2 grades the values, part 3 the gradients."""
    raise NotImplementedError("Part 2 (vq_forward) is not done yet")


def vq_loss_gradient(beta: float, n: int) -> tuple:
    """Part 4 (on paper first; the notebook does not print it). With z and e two tensors of n numbers each (e the
    codes chosen for z) and L = mean((sg[z] - e)^2) + beta * mean((z - sg[e])^2), both means over the n numbers,
    the gradients are dL/dz = a * (z - e) and dL/de = b * (e - z) for two numbers a and b. Derive them by hand and
    return (a, b) as floats. Check yourself with autograd on a small example, after you have derived them."""
    raise NotImplementedError("Part 4 (vq_loss_gradient) is not done yet")
