"""Vector quantization (VQ-VAE, van den Oord et al. 2017), as VQGAN and LlamaGen use it.

An encoder output z (B, C, h, w) is replaced by its nearest code e_k from a learned codebook (K, C):

    k = argmin_j ||z - e_j||^2          (the token)
    z_q = e_k

argmin has no gradient, so training uses the straight-through estimator: in the forward pass the decoder
sees z_q, in the backward pass the gradient at z_q is copied to z unchanged (z_q = z + sg[e_k - z]).
The codebook never sees that gradient; it learns from its own loss, and the encoder is kept close to the
codes it picks by the commitment loss:

    codebook loss   = ||sg[z] - e_k||^2     (moves codes toward the encoder outputs)
    commitment loss = beta * ||z - sg[e_k]||^2   (beta = 0.25, as the paper and LlamaGen)

Options from LlamaGen / ViT-VQGAN (l2-normalised and low-dim codes, EMA, restarts) arrive in notebook 02.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class VectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int = 512, dim: int = 64, beta: float = 0.25):
        super().__init__()
        if codebook_size < 2 or dim < 1:
            raise ValueError(f"need codebook_size >= 2 and dim >= 1, got {codebook_size}, {dim}")
        self.codebook_size, self.dim, self.beta = codebook_size, dim, beta
        self.codebook = nn.Embedding(codebook_size, dim)
        # small uniform init (taming / LlamaGen): codes start near the origin, where fresh encoders put z
        self.codebook.weight.data.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)

    def nearest(self, z_flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of z_flat (N, C), by squared Euclidean distance.

        ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2, computed in fp32 even under autocast: in bf16 the
        difference of large nearly-equal terms loses the small gaps that decide the argmin.
        """
        with torch.autocast(z_flat.device.type, enabled=False):
            z, e = z_flat.float(), self.codebook.weight.float()
            d = z.pow(2).sum(1, keepdim=True) - 2 * z @ e.t() + e.pow(2).sum(1)  # (N, K)
            return d.argmin(1)

    def forward(self, z: torch.Tensor):
        """z (B, C, h, w) -> z_q (B, C, h, w) with straight-through gradient, indices (B, h, w), loss, stats."""
        if z.ndim != 4 or z.shape[1] != self.dim:
            raise ValueError(f"expected z of shape (B, {self.dim}, h, w), got {tuple(z.shape)}")
        B, C, h, w = z.shape
        z_flat = z.permute(0, 2, 3, 1).reshape(-1, C)  # (B*h*w, C)
        idx = self.nearest(z_flat)  # (B*h*w,)
        e = self.codebook(idx).to(z.dtype)  # (B*h*w, C)

        codebook_loss = F.mse_loss(e, z_flat.detach())
        commitment_loss = self.beta * F.mse_loss(z_flat, e.detach())
        e = z_flat + (e - z_flat).detach()  # straight-through: value of e, gradient of identity to z

        z_q = e.reshape(B, h, w, C).permute(0, 3, 1, 2)
        indices = idx.reshape(B, h, w)
        stats = {"codebook_loss": codebook_loss.detach(), "commitment_loss": commitment_loss.detach(),
                 **usage_stats(idx, self.codebook_size)}
        return z_q, indices, codebook_loss + commitment_loss, stats

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Token map (B, h, w) -> code vectors (B, C, h, w), for decoding."""
        if indices.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"expected integer token indices, got {indices.dtype}")
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ValueError(f"token indices must lie in [0, {self.codebook_size}), "
                             f"got [{int(indices.min())}, {int(indices.max())}]")
        return self.codebook(indices).permute(0, 3, 1, 2)


@torch.no_grad()
def usage_stats(indices: torch.Tensor, codebook_size: int) -> dict:
    """Fraction of codes used in this batch, and perplexity exp(H(p)) of the batch's code histogram.

    Perplexity is the "effective number of codes": K if all are used equally, 1 if one code takes all.
    """
    counts = torch.bincount(indices.flatten(), minlength=codebook_size).float()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"usage": (counts > 0).float().mean(), "perplexity": entropy.exp()}
