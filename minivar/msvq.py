"""VAR's multi-scale residual quantizer (Tian et al. 2024) and the tokenizer built around it.

One latent f (B, C, h, w) becomes K token maps, coarsest first: r_1 (1x1), r_2 (2x2), ..., r_K (h x w).
Every scale quantizes what the coarser scales have not explained yet (the residual), with one codebook:

    residual = f,  f_hat = 0
    for k = 1..K:
        r_k   = nearest code of area_downsample(residual, to scale k)       (B, h_k, w_k) tokens
        z_k   = phi_k(bicubic_upsample(codes[r_k], to h x w))              back to full size, refined
        f_hat = f_hat + z_k                                                  the reconstruction so far
        residual = residual - z_k

The decoder sees f_hat after the last scale; after scale k it is a coarse version of the image, which is
what a next-scale transformer conditions on (teacher_forcing_input). phi_k(h) = (1 - r) h + r conv3x3(h)
(r = 0.5) repairs the blur of upsampling a tiny map; VAR shares 4 such convolutions among the scales and
picks one per scale by its relative depth k / (K - 1) (phi_index).

The codebook learns from VAR's loss: for every scale, (1 + beta) * MSE between the cumulative f_hat and f (the
codebook/Phi half pulls f_hat towards f, the beta half pulls f towards f_hat), averaged over scales; the
encoder receives the decoder's gradient straight through f_hat = f + sg[f_hat - f].

    tok = MultiScaleVQVAE(MultiScaleVQVAEConfig(image_size=32, scales=(1, 2, 3, 4, 6, 8)))
    tokens = tok.encode(images)                 # [(B, 1, 1), (B, 2, 2), ..., (B, 8, 8)]  (= encode_scales)
    images = tok.decode(tokens)                 # (B, 3, 32, 32) in [-1, 1]              (= decode_scales)
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .autoencoder import VQVAEConfig, reconstruction_losses, vqgan_encoder_decoder
from .models import Tokenizer, register
from .scales import split_scales
from .vq import nearest_code, usage_stats


class Phi(nn.Module):
    """h -> (1 - ratio) * h + ratio * conv3x3(h): a residual refinement of an upsampled code map."""

    def __init__(self, dim: int, ratio: float = 0.5):
        super().__init__()
        self.ratio = ratio
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, h):
        return h * (1 - self.ratio) + self.conv(h) * self.ratio


def phi_index(scale: int, n_scales: int, n_phi: int) -> int:
    """Which of n_phi shared Phi convolutions scale `scale` (0 = coarsest) uses, as VAR chooses it: the Phi whose
    tick is closest to the scale's relative depth scale / (n_scales - 1). Ticks are evenly spread over (0, 1)
    with margins 1/(2 n_phi), or 1/(3 n_phi) for VAR's default of 4 Phis. For 10 scales and 4 Phis this gives
    [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]; scales 2 and 7 lie exactly between two ticks and float64 rounding decides,
    so the same numpy expression is used here to reproduce the released weights' choice."""
    if n_phi == 1 or n_scales == 1:
        return 0
    margin = 1 / (3 * n_phi) if n_phi == 4 else 1 / (2 * n_phi)
    ticks = np.linspace(margin, 1 - margin, n_phi)
    return int(np.argmin(np.abs(ticks - scale / (n_scales - 1))))


class MultiScaleQuantizer(nn.Module):
    def __init__(self, codebook_size: int, dim: int, scales: tuple, beta: float = 0.25, phi_ratio: float = 0.5,
                 n_phi: int = 4, l2_norm: bool = False):
        super().__init__()
        self.codebook_size, self.dim, self.scales, self.beta = codebook_size, dim, tuple(scales), beta
        self.l2_norm = l2_norm  # VAR's using_znorm: cosine lookup, but the raw codes are what is added to f_hat
        self.codebook = nn.Embedding(codebook_size, dim)
        self.codebook.weight.data.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
        n_phi = n_phi or len(self.scales)  # 0 = one Phi per scale
        self.phis = nn.ModuleList(Phi(dim, phi_ratio) for _ in range(n_phi)) if phi_ratio > 0 else None
        # which Phi each scale uses, fixed by the schedule
        self.phi_of_scale = [phi_index(k, len(self.scales), n_phi) for k in range(len(self.scales))]

    # --- the pieces ---------------------------------------------------------------------------------------

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C, h, w) -> token map (B, h, w): the nearest code of every vector (fp32, vq.nearest_code)."""
        B, C, h, w = z.shape
        idx = nearest_code(rearrange(z, "b c h w -> (b h w) c"), self.codebook.weight, cosine=self.l2_norm)
        return idx.view(B, h, w)

    def lookup(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, h, w) -> (B, C, h, w) code vectors."""
        return rearrange(self.codebook(tokens), "b h w c -> b c h w")

    def upsample_and_refine(self, codes: torch.Tensor, k: int, size: int) -> torch.Tensor:
        """Scale k's code map (B, C, h_k, w_k) -> its contribution to f_hat (B, C, size, size)."""
        if codes.shape[-1] != size:  # the last scale is already full size
            codes = F.interpolate(codes, size=(size, size), mode="bicubic")
        return self.phis[self.phi_of_scale[k]](codes) if self.phis is not None else codes

    def check_latent(self, f):
        if f.ndim != 4 or f.shape[1] != self.dim or f.shape[-1] != self.scales[-1] or f.shape[-2] != self.scales[-1]:
            raise ValueError(f"expected a latent (B, {self.dim}, {self.scales[-1]}, {self.scales[-1]}) (the last scale "
                             f"must be the latent size), got {tuple(f.shape)}")

    # --- encode / decode ----------------------------------------------------------------------------------

    def residual_quantize(self, f: torch.Tensor):
        """-> (tokens per scale, the cumulative f_hat after each scale, with gradients to the codebook and Phi)."""
        self.check_latent(f)
        size = f.shape[-1]
        residual, f_hat = f.detach().float(), torch.zeros_like(f, dtype=torch.float32)
        tokens, cumulative = [], []
        for k, s in enumerate(self.scales):
            z = F.interpolate(residual, size=(s, s), mode="area") if s != size else residual
            idx = self.nearest(z)  # (B, s, s)
            contribution = self.upsample_and_refine(self.lookup(idx), k, size)
            f_hat = f_hat + contribution
            residual = residual - contribution.detach()
            tokens.append(idx)
            cumulative.append(f_hat)
        return tokens, cumulative

    @torch.no_grad()
    def encode_scales(self, f: torch.Tensor) -> list:
        """Latent (B, C, h, w) -> token maps [(B, s_1, s_1), ..., (B, s_K, s_K)], coarsest first."""
        return self.residual_quantize(f)[0]

    def tokens_to_fhat(self, tokens: list, cumulative: bool = False):
        """Token maps (coarsest first) -> f_hat (B, C, h, w); with cumulative=True the list after every scale."""
        self.check_tokens(tokens)
        size = self.scales[-1]
        f_hat, out = 0.0, []
        for k, idx in enumerate(tokens):
            f_hat = f_hat + self.upsample_and_refine(self.lookup(idx), k, size)
            out.append(f_hat)
        return out if cumulative else out[-1]

    def check_tokens(self, tokens):
        shapes = [tuple(t.shape[1:]) for t in tokens] if isinstance(tokens, (list, tuple)) else None
        if shapes != [(s, s) for s in self.scales[:len(shapes or [])]] or not shapes:
            got = shapes if shapes is not None else f"a {type(tokens).__name__} of shape {tuple(tokens.shape)}" \
                if torch.is_tensor(tokens) else type(tokens).__name__
            raise ValueError(f"expected a list of token maps (B, s, s) of sizes {list(self.scales)} (coarsest first), "
                             f"got {got}" + ("; flat rows (B, L) from the token cache: tokenizer.split_scales(rows)"
                                             if torch.is_tensor(tokens) and tokens.ndim == 2 else ""))

    def teacher_forcing_input(self, tokens: list) -> torch.Tensor:
        """What the next-scale transformer reads when predicting scales 2..K (VAR's idxBl_to_var_input):
        for k < K, the cumulative f_hat after scale k, area-downsampled to scale k+1's size, flattened.
        -> (B, L - s_1^2, C) with L = sum of s_k^2 (scale 1 is predicted from the class token alone)."""
        cumulative = self.tokens_to_fhat(tokens[:-1], cumulative=True)
        return torch.cat([rearrange(F.interpolate(f_hat, size=(s, s), mode="area"), "b c h w -> b (h w) c")
                          for f_hat, s in zip(cumulative, self.scales[1:])], dim=1)

    def next_input(self, k: int, f_hat, tokens_k: torch.Tensor):
        """Generation, after sampling scale k: -> (updated f_hat, the next scale's input (B, C, s, s), or the
        final f_hat after the last scale). `f_hat` is not modified in place (None = zeros)."""
        size = self.scales[-1]
        f_hat = self.upsample_and_refine(self.lookup(tokens_k), k, size) + (0.0 if f_hat is None else f_hat)
        if k == len(self.scales) - 1:
            return f_hat, f_hat
        s = self.scales[k + 1]
        return f_hat, F.interpolate(f_hat, size=(s, s), mode="area")

    # --- training -------------------------------------------------------------------------------------------

    def forward(self, f: torch.Tensor):
        """-> (f_hat with the straight-through gradient to f, tokens per scale, loss, stats)."""
        tokens, cumulative = self.residual_quantize(f)
        f32 = f.float()
        loss = sum(F.mse_loss(f_hat, f32.detach()) + self.beta * F.mse_loss(f_hat.detach(), f32)
                   for f_hat in cumulative) / len(cumulative)
        f_hat = (cumulative[-1].detach() - f32.detach()) + f32  # value of f_hat, gradient of f
        return f_hat.type_as(f), tokens, loss, usage_per_scale(tokens, self.codebook_size)


def usage_per_scale(tokens: list, codebook_size: int) -> dict:
    """Fraction of the codebook each scale used in this batch, and usage / perplexity over all scales together."""
    stats = {f"usage_{k}": usage_stats(t, codebook_size)["usage"] for k, t in enumerate(tokens)}
    return {**stats, **usage_stats(torch.cat([t.flatten() for t in tokens]), codebook_size)}


# ----------------------------------------------------------------------------------------------- the tokenizer

@dataclass
class MultiScaleVQVAEConfig(VQVAEConfig):
    """The VQ-VAE config with VAR's quantizer. The scales end at the latent size: for 32x32 images and a 4x
    downsampling encoder (ch_mult of length 3), (1, 2, 3, 4, 6, 8); VAR's 256 px schedule is
    (1, 2, 3, 4, 5, 6, 8, 10, 13, 16) over a 16x16 latent."""
    scales: tuple = (1, 2, 3, 4, 6, 8)
    phi_ratio: float = 0.5  # r in phi(h) = (1 - r) h + r conv(h); 0 = no Phi
    n_phi: int = 4  # shared Phi convolutions (VAR: 4); 0 = one per scale
    quant_kernel: int = 3  # kernel of quant_conv / post_quant_conv (VAR: 3, VQGAN / LlamaGen: 1)

    def __post_init__(self):
        super().__post_init__()
        self.scales = tuple(self.scales)
        if not self.scales or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in self.scales):
            raise ValueError(f"scales must be whole numbers of tokens per side, e.g. 1,2,3,4,6,8; got {self.scales}")
        if list(self.scales) != sorted(set(self.scales)) or self.scales[-1] != self.grid:
            raise ValueError(f"scales must increase and end at the latent grid {self.grid} "
                             f"(image_size / 2**(len(ch_mult)-1)), got {self.scales}")
        single_scale_only = self.ema or self.restart_after or self.entropy_weight or self.rotation_trick
        if single_scale_only or self.codebook_init != "uniform":
            raise ValueError("the multi-scale quantizer has no ema / restart_after / entropy_weight / rotation_trick / "
                             "codebook_init options (those belong to the single-scale VectorQuantizer)")

    @property
    def tokens_per_image(self) -> int:
        return sum(s * s for s in self.scales)


@register("msvqvae", MultiScaleVQVAEConfig)
class MultiScaleVQVAE(Tokenizer):
    code_fields = Tokenizer.code_fields + ("scales",)  # a next-scale generator reads the scales too

    def __init__(self, cfg: MultiScaleVQVAEConfig):
        super().__init__(cfg)
        self.encoder, self.decoder = vqgan_encoder_decoder(cfg)
        pad = cfg.quant_kernel // 2
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.code_dim, cfg.quant_kernel, padding=pad)
        self.quantizer = MultiScaleQuantizer(cfg.codebook_size, cfg.code_dim, cfg.scales, cfg.beta, cfg.phi_ratio,
                                             cfg.n_phi, cfg.l2_norm)
        self.post_quant_conv = nn.Conv2d(cfg.code_dim, cfg.z_channels, cfg.quant_kernel, padding=pad)

    @property
    def last_layer(self) -> nn.Parameter:  # where the GAN's adaptive weight compares gradients: the decoder's last conv
        return self.decoder.conv_out.weight

    def latent(self, images):
        """Images -> the continuous latent f (B, code_dim, h, w) the quantizer works on."""
        self.check_images(images)
        return self.quant_conv(self.encoder(images))

    @torch.no_grad()
    def encode_scales(self, images: torch.Tensor) -> list:
        """Images (B, 3, H, W) in [-1, 1] -> token maps [(B, s_k, s_k)], coarsest first."""
        return self.quantizer.encode_scales(self.latent(images))

    def decode_fhat(self, f_hat: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(f_hat))

    @torch.no_grad()
    def decode_scales(self, tokens: list, every_scale: bool = False):
        """Token maps -> images (B, 3, H, W) clamped to [-1, 1]; every_scale=True: the list of images decoded
        from the cumulative f_hat after each scale (a picture of every scale)."""
        if isinstance(tokens, (list, tuple)) and len(tokens) != len(self.cfg.scales):
            raise ValueError(f"decoding needs the token maps of all {len(self.cfg.scales)} scales "
                             f"{list(self.cfg.scales)}, got {len(tokens)}: an image from fewer is the reconstruction "
                             f"so far, quantizer.tokens_to_fhat(tokens) then decode_fhat(f_hat), if that is meant")
        f_hats = self.quantizer.tokens_to_fhat(tokens, cumulative=True)
        images = [self.decode_fhat(f).clamp(-1, 1) for f in (f_hats if every_scale else f_hats[-1:])]
        return images if every_scale else images[0]

    # the tokenizer contract (models.Tokenizer): the codes are the list of token maps, coarsest first
    encode = encode_scales

    def decode(self, tokens: list) -> torch.Tensor:
        return self.decode_scales(tokens)

    def split_scales(self, flat: torch.Tensor) -> list:
        """(B, L) -> [(B, s_k, s_k)]: undo the flattening of the token cache (all scales in one row)."""
        return split_scales(flat, self.cfg.scales)

    def forward(self, images: torch.Tensor):
        """-> reconstructions, losses {"recon", "vq", "total"}, stats (usage per scale, perplexity)."""
        f_hat, _, vq_loss, stats = self.quantizer(self.latent(images))
        recon = self.decode_fhat(f_hat)
        return recon, reconstruction_losses(recon, images, vq_loss, self.cfg.recon_loss), stats


__all__ = ["Phi", "phi_index", "MultiScaleQuantizer", "MultiScaleVQVAEConfig", "MultiScaleVQVAE",
           "usage_per_scale"]
