"""Vector quantization (VQ-VAE, van den Oord et al. 2017), with the options of LlamaGen and ViT-VQGAN.

An encoder output z (B, C, h, w) is replaced by its nearest code e_k from a learned codebook (K, C):

    k = argmin_j ||z - e_j||^2          (the token)
    z_q = e_k

argmin has no gradient, so training uses the straight-through estimator: in the forward pass the decoder
sees z_q, in the backward pass the gradient at z_q is copied to z unchanged (z_q = z + sg[e_k - z]).
The codebook never sees that gradient; it learns from its own loss, and the encoder is kept close to the
codes it picks by the commitment loss:

    codebook loss   = ||sg[z] - e_k||^2          (moves codes toward the encoder outputs)
    commitment loss = beta * ||z - sg[e_k]||^2   (beta = 0.25, as the paper and LlamaGen)

Options (all off by default), each a few lines below and a section of notebook 02:
- l2_norm         z and codes on the unit sphere, so the distance is cosine (ViT-VQGAN, LlamaGen);
- ema             codes follow an exponential moving average of their assigned z (VQ-VAE-2, SoundStream)
                  instead of the codebook loss, with Laplace smoothing of the counts;
- restart_after   a code unused for that many steps is re-initialised to a random current z (Jukebox);
- init="data"     codes start as random encoder outputs of the first training batch instead of tiny vectors
                  near the origin (the data initialisation of Jukebox and SoundStream, without their k-means);
- entropy_weight  LlamaGen's entropy loss: confident per-vector assignments, diverse over the batch;
- rotation_trick  Fifty et al. 2024: instead of copying the gradient, carry it through the rotation and
                  scaling that maps z onto e_k, so it "sees" the angle between them.
Low-dimensional codes (ViT-VQGAN's factorized codes) need no option here: the learned in/out projections
are the VQ-VAE's 1x1 quant_conv / post_quant_conv around the quantizer, with `code_dim` the code size.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class VectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int = 512, dim: int = 64, beta: float = 0.25, l2_norm: bool = False,
                 ema: bool = False, ema_decay: float = 0.99, ema_eps: float = 1e-5, restart_after: int = 0,
                 entropy_weight: float = 0.0, entropy_temperature: float = 0.01, rotation_trick: bool = False,
                 usage_window: int = 65536, init: str = "uniform"):
        super().__init__()
        if init not in ("uniform", "data"):
            raise ValueError(f"unknown codebook init {init!r}; choose 'uniform' (tiny codes near the origin, taming / "
                             f"LlamaGen) or 'data' (codes copied from the first training batch's encoder outputs)")
        if codebook_size < 2 or dim < 1:
            raise ValueError(f"need codebook_size >= 2 and dim >= 1, got {codebook_size}, {dim}")
        if not 0 < ema_decay < 1:
            raise ValueError(f"ema_decay must lie in (0, 1), got {ema_decay}")
        self.codebook_size, self.dim, self.beta, self.l2_norm = codebook_size, dim, beta, l2_norm
        self.ema, self.ema_decay, self.ema_eps = ema, ema_decay, ema_eps
        self.restart_after, self.rotation_trick = restart_after, rotation_trick
        self.entropy_weight, self.entropy_temperature = entropy_weight, entropy_temperature
        self.codebook = nn.Embedding(codebook_size, dim)
        # small uniform init (taming / LlamaGen): codes start near the origin, where fresh encoders put z
        self.codebook.weight.data.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
        if init == "data":  # saved, so a resumed run does not initialise twice
            self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        if ema:  # the codebook is then a running average, not a parameter the optimizer touches
            self.codebook.weight.requires_grad_(False)
            self.register_buffer("ema_count", torch.zeros(codebook_size))
            self.register_buffer("ema_sum", self.codebook.weight.data.clone())
        if restart_after > 0:
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))
            self.register_buffer("last_used", torch.zeros(codebook_size, dtype=torch.long))
        # the most recent tokens seen in training, for LlamaGen-style usage; -1 marks an empty slot
        self.register_buffer("recent", torch.full((usage_window,), -1, dtype=torch.long), persistent=False)

    def codes(self) -> torch.Tensor:
        """The codebook as used for lookup: (K, C), on the unit sphere when l2_norm."""
        e = self.codebook.weight
        return F.normalize(e, dim=1) if self.l2_norm else e

    def distances(self, z_flat: torch.Tensor) -> torch.Tensor:
        """Squared distances (N, K) from each row of z_flat to each code (fp32, see code_distances)."""
        return code_distances(z_flat, self.codes())

    def nearest(self, z_flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of z_flat (N, C). With l2_norm, z_flat is normalised first."""
        if self.l2_norm:
            z_flat = F.normalize(z_flat, dim=1)
        return nearest_code(z_flat, self.codes())

    def forward(self, z: torch.Tensor):
        """z (B, C, h, w) -> z_q (B, C, h, w) with straight-through gradient, indices (B, h, w), loss, stats."""
        if z.ndim != 4 or z.shape[1] != self.dim:
            raise ValueError(f"expected z of shape (B, {self.dim}, h, w), got {tuple(z.shape)}")
        B, C, h, w = z.shape
        z_flat = rearrange(z, "b c h w -> (b h w) c")
        if self.l2_norm:
            z_flat = F.normalize(z_flat, dim=1)  # cosine geometry: everything on the unit sphere
        if self.training and hasattr(self, "initialised") and not self.initialised:
            with torch.no_grad():
                self.init_from_data(z_flat.detach())
        d = self.distances(z_flat)  # (N, K)
        idx = d.argmin(1)  # (N,)
        e = F.embedding(idx, self.codes()).to(z.dtype)  # (N, C); embedding's backward sums deterministically

        stats = {}
        loss = self.beta * F.mse_loss(z_flat, e.detach())  # commitment
        stats["commitment_loss"] = loss.detach()
        if not self.ema:
            codebook_loss = F.mse_loss(e, z_flat.detach())
            loss = loss + codebook_loss
            stats["codebook_loss"] = codebook_loss.detach()
        if self.entropy_weight > 0:
            ent = entropy_loss(-d, self.entropy_temperature)
            loss = loss + self.entropy_weight * ent
            stats["entropy_loss"] = ent.detach()
        if self.training:
            with torch.no_grad():
                if self.ema:
                    self.ema_update(z_flat.detach(), idx)
                if self.restart_after > 0:
                    stats["restarted"] = self.restart_dead_codes(z_flat.detach(), idx)
                stats["window_usage"] = self.track_usage(idx)

        e = rotate_to(z_flat, e) if self.rotation_trick else straight_through(z_flat, e)
        z_q = rearrange(e, "(b h w) c -> b c h w", b=B, h=h)
        stats.update(usage_stats(idx, self.codebook_size))
        return z_q, idx.reshape(B, h, w), loss, stats

    # ------------------------------------------------------------------ the options, one method each

    def ema_update(self, z_flat, idx):
        """count_k <- decay count_k + (1 - decay) n_k;  sum_k <- decay sum_k + (1 - decay) sum_{i: k_i = k} z_i;
        e_k = sum_k / smoothed count_k, the counts Laplace-smoothed so an empty code never divides by zero."""
        onehot = F.one_hot(idx, self.codebook_size).type(z_flat.dtype)  # (N, K)
        n, s = onehot.sum(0), onehot.t() @ z_flat  # (K,), (K, C)
        if dist.is_available() and dist.is_initialized():  # every rank sees the whole global batch's statistics
            dist.all_reduce(n)
            dist.all_reduce(s)
        self.ema_count.mul_(self.ema_decay).add_(n, alpha=1 - self.ema_decay)
        self.ema_sum.mul_(self.ema_decay).add_(s, alpha=1 - self.ema_decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.ema_eps) / (total + self.codebook_size * self.ema_eps) * total
        self.codebook.weight.data.copy_(self.ema_sum / smoothed[:, None])

    def init_from_data(self, z_flat):
        """Every code becomes a random encoder output of this batch (distinct ones when the batch has enough), so
        every code starts where the data is and wins something: no collapse at the start."""
        K = self.codebook_size
        if K <= len(z_flat):
            pick = torch.randperm(len(z_flat), device=z_flat.device)[:K]
        else:
            pick = torch.randint(0, len(z_flat), (K,), device=z_flat.device)
        self.codebook.weight.data.copy_(z_flat[pick].to(self.codebook.weight.dtype))
        if self.ema:
            self.ema_count.fill_(1.0)
            self.ema_sum.copy_(self.codebook.weight.data)
        if dist.is_available() and dist.is_initialized():  # every rank starts from rank 0's codes
            dist.broadcast(self.codebook.weight.data, 0)
            if self.ema:
                dist.broadcast(self.ema_sum, 0)
        self.initialised.fill_(True)

    def restart_dead_codes(self, z_flat, idx) -> torch.Tensor:
        """Codes unused for `restart_after` steps jump to random current encoder outputs. Returns how many."""
        self.steps += 1
        self.last_used[idx.unique()] = self.steps
        dead = (self.steps - self.last_used >= self.restart_after).nonzero().flatten()
        if len(dead):
            if len(dead) <= len(z_flat):  # distinct vectors: two codes restarted equal would compete for one
                pick = torch.randperm(len(z_flat), device=z_flat.device)[:len(dead)]
            else:
                pick = torch.randint(0, len(z_flat), (len(dead),), device=z_flat.device)
            self.codebook.weight.data[dead] = z_flat[pick].to(self.codebook.weight.dtype)
            self.last_used[dead] = self.steps  # give the new code time to win something
            if self.ema:
                self.ema_count[dead] = 1.0
                self.ema_sum[dead] = self.codebook.weight.data[dead]
            if dist.is_available() and dist.is_initialized():  # keep every rank's codebook identical
                dist.broadcast(self.codebook.weight.data, 0)
        return torch.tensor(float(len(dead)))

    def track_usage(self, idx) -> torch.Tensor:
        """Fraction of codes among the last `usage_window` training tokens (LlamaGen's usage measure,
        without its quirk of a zero-filled window that counts code 0 as used before it has been seen)."""
        n = min(len(idx), len(self.recent))
        self.recent.copy_(torch.cat([self.recent[n:], idx[-n:]]))
        seen = self.recent[self.recent >= 0]
        return torch.tensor(seen.unique().numel() / self.codebook_size)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Token map (B, h, w) -> code vectors (B, C, h, w), for decoding."""
        if indices.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"expected integer token indices, got {indices.dtype}")
        if indices.ndim != 3:
            raise ValueError(f"expected token maps (B, h, w), got shape {tuple(indices.shape)}"
                             + ("; one map without its batch axis: tokens[None]" if indices.ndim == 2 else ""))
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ValueError(f"token indices must lie in [0, {self.codebook_size}), "
                             f"got [{int(indices.min())}, {int(indices.max())}]")
        return rearrange(F.embedding(indices, self.codes()), "b h w c -> b c h w")


# ------------------------------------------------------------- the nearest code, shared by both quantizers

def code_distances(z_flat: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Squared distances (N, K) from each row of z_flat (N, C) to each code (K, C).

    ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2, computed in fp32 even under autocast: in bf16 the difference of
    large nearly-equal terms loses the small gaps that decide the argmin (the official VAR and LlamaGen
    quantizers guard this the same way).
    """
    with torch.autocast(z_flat.device.type, enabled=False):
        z, e = z_flat.float(), codes.float()
        return z.pow(2).sum(1, keepdim=True) - 2 * z @ e.t() + e.pow(2).sum(1)


def nearest_code(z_flat: torch.Tensor, codes: torch.Tensor, cosine: bool = False) -> torch.Tensor:
    """Index (N,) of the nearest code (K, C) for each row of z_flat (N, C), in fp32 under autocast too.

    cosine=False: smallest squared distance (VQ-VAE, LlamaGen; with l2-normalised inputs this is the cosine
    geometry as LlamaGen computes it). cosine=True: largest cosine similarity of the normalised vectors, as VAR's
    `using_znorm` computes it (the same choice up to rounding; kept so VAR's weights pick its exact tokens).
    """
    if not cosine:
        return code_distances(z_flat, codes).argmin(1)
    with torch.autocast(z_flat.device.type, enabled=False):
        return (F.normalize(z_flat.float(), dim=1) @ F.normalize(codes.float(), dim=1).t()).argmax(1)


def straight_through(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Value of e, gradient of the identity to z."""
    return z + (e - z).detach()


def rotate_to(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """The rotation trick (Fifty et al., 2024): e expressed as a rotation + rescaling of z, R and the scale held
    constant. Forward value: e. Gradient to z: (||e|| / ||z||) R^T g, where R rotates z's direction onto e's.

    R = I - 2 r r^T + 2 q u^T with u = z/||z||, q = e/||e||, r = (u + q)/||u + q||, applied without forming R.
    """
    eps = 1e-6
    z_norm, e_norm = z.norm(dim=1, keepdim=True).clamp_min(eps), e.norm(dim=1, keepdim=True)
    u, q = (z / z_norm).detach(), (e / e_norm.clamp_min(eps)).detach()
    r = F.normalize(u + q, dim=1, eps=eps).detach()
    rz = z - 2 * r * (r * z).sum(1, keepdim=True) + 2 * q * (u * z).sum(1, keepdim=True)  # R z, (N, C)
    return (e_norm / z_norm).detach() * rz


def entropy_loss(logits: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """LlamaGen's codebook entropy loss on affinities (N, K) (there: -squared distance, temperature 0.01):
    the mean entropy of each vector's soft assignment (small: be confident) minus the entropy of the batch's
    average assignment (large: use many codes)."""
    logits = logits.float() / temperature
    probs, log_probs = logits.softmax(-1), logits.log_softmax(-1)
    sample_entropy = -(probs * log_probs).sum(-1).mean()
    avg = probs.mean(0)
    avg_entropy = -(avg * torch.log(avg + 1e-5)).sum()
    return sample_entropy - avg_entropy


@torch.no_grad()
def usage_stats(indices: torch.Tensor, codebook_size: int) -> dict:
    """Fraction of codes used in this batch, and perplexity exp(H(p)) of the batch's code histogram.

    Perplexity is the "effective number of codes": K if all are used equally, 1 if one code takes all.
    """
    counts = torch.bincount(indices.flatten(), minlength=codebook_size).float()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"usage": (counts > 0).float().mean(), "perplexity": entropy.exp()}
