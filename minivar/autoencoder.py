"""The VQ-VAE tokenizer: a VQGAN-style CNN encoder, a vector quantizer, and a mirrored decoder.

    image (B, 3, H, W) --Encoder--> (B, z_channels, h, w) --1x1 conv--> z (B, code_dim, h, w)
      --VQ--> tokens (B, h, w) / z_q --1x1 conv--> --Decoder--> image (B, 3, H, W)

with h = H / 2**(len(ch_mult) - 1). The blocks follow taming-transformers' VQGAN, which LlamaGen's and
VAR's tokenizers also use: ResNet blocks (GroupNorm + SiLU + 3x3 conv), stride-2 convs down, nearest
upsampling + conv up, optional self-attention at the lowest resolution, and 1x1 convs around the quantizer
(quant_conv / post_quant_conv) so the code dimension is free of the encoder's width.

Losses here: reconstruction (L2 or L1) + the quantizer's codebook and commitment terms. The perceptual and
adversarial terms of VQGAN slot in on top (see `VQVAE.forward`'s returned dict) in notebook 02.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .models import Tokenizer, register
from .vq import VectorQuantizer


@dataclass
class VQVAEConfig:
    renamed = {"embed_dim": "code_dim"}  # fields of checkpoints from an older minivar, old -> new (models.py)

    image_size: int = 32  # input images are (3, image_size, image_size) in [-1, 1]
    ch: int = 64  # width of the first (full-resolution) level; the main cost on a CPU
    ch_mult: tuple = (1, 2, 2)  # width multiplier per level; len - 1 = number of 2x downsamplings
    num_res_blocks: int = 1  # ResNet blocks per encoder level (VQGAN / LlamaGen: 2; the decoder has one more)
    attn: bool = False  # self-attention at the lowest resolution: mid block + after its ResNet blocks (VQGAN)
    z_channels: int = 64  # encoder output / decoder input width
    code_dim: int = 64  # code dimension: quant_conv maps z_channels -> code_dim (ViT-VQGAN's factorized codes)
    codebook_size: int = 512  # K: number of codes, i.e. the vocabulary of the generators
    beta: float = 0.25  # commitment weight (VQ-VAE paper, LlamaGen)
    codebook_init: str = "uniform"  # "uniform": tiny codes in +-1/K (taming, LlamaGen); "data": first batch's z
    l2_norm: bool = False  # codes and z on the unit sphere, cosine distance (LlamaGen's default: True)
    ema: bool = False  # EMA codebook updates instead of the codebook loss
    ema_decay: float = 0.99
    restart_after: int = 0  # re-initialise codes unused for this many steps (0: never)
    entropy_weight: float = 0.0  # LlamaGen's entropy loss weight (its default: 0)
    rotation_trick: bool = False  # rotation trick instead of the straight-through copy
    recon_loss: str = "l2"  # "l2" or "l1"
    dropout: float = 0.0

    def __post_init__(self):
        check_autoencoder_config(self)
        if self.codebook_init not in ("uniform", "data"):
            raise ValueError(f"unknown codebook_init {self.codebook_init!r}; choose uniform or data")

    @property
    def grid(self) -> int:
        return self.image_size // 2 ** (len(self.ch_mult) - 1)


def check_autoencoder_config(cfg):
    """What every autoencoder config of the course must satisfy (VQ and KL alike)."""
    cfg.ch_mult = tuple(cfg.ch_mult)
    sizes = ("image_size", "ch", "z_channels", "code_dim", "codebook_size", "latent_channels")
    for key in [k for k in sizes if hasattr(cfg, k)]:
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a whole number >= 1, got {value!r}; --set {key}=...")
    if not cfg.ch_mult or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in cfg.ch_mult):
        raise ValueError(f"ch_mult must be whole numbers >= 1, one per level (e.g. 1,2,2), got {cfg.ch_mult}; "
                         f"--set ch_mult=...")
    if isinstance(cfg.num_res_blocks, bool) or not isinstance(cfg.num_res_blocks, int) or cfg.num_res_blocks < 0:
        raise ValueError(f"num_res_blocks must be a whole number >= 0, got {cfg.num_res_blocks!r}")
    down = 2 ** (len(cfg.ch_mult) - 1)
    if cfg.image_size % down:
        raise ValueError(f"image_size {cfg.image_size} is not divisible by 2**(len(ch_mult)-1) = {down}")
    if cfg.recon_loss not in ("l1", "l2"):
        raise ValueError(f"recon_loss must be 'l1' or 'l2', got {cfg.recon_loss!r}")


def norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, c), c, eps=1e-6)  # 32 groups as VQGAN, fewer when c is small


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all h*w positions (VQGAN's attention block)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = norm(c)
        self.q, self.k, self.v = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (rearrange(f(h), "b c h w -> b (h w) c") for f in (self.q, self.k, self.v))
        h = F.scaled_dot_product_attention(q, k, v)  # (B, HW, C), softmax(q k^T / sqrt(C)) v
        return x + self.proj_out(rearrange(h, "b (h w) c -> b c h w", h=H))


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # taming's asymmetric pad: exact halving with a 3x3 kernel


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution: ResNet blocks, each followed by attention if `attn`, then a resampling (or none)."""

    def __init__(self, c_in, c_out, n_blocks, attn, resample, dropout):
        super().__init__()
        self.res = nn.ModuleList(ResBlock(c_in if i == 0 else c_out, c_out, dropout) for i in range(n_blocks))
        self.attn = nn.ModuleList(AttnBlock(c_out) for _ in range(n_blocks)) if attn else nn.ModuleList()
        if resample is not None:
            self.resample = resample(c_out)

    def forward(self, x):
        for i, block in enumerate(self.res):
            x = block(x)
            if self.attn:
                x = self.attn[i](x)
        return self.resample(x) if hasattr(self, "resample") else x


class Mid(nn.Module):
    def __init__(self, c, attn, dropout):
        super().__init__()
        self.res1, self.res2 = ResBlock(c, c, dropout), ResBlock(c, c, dropout)
        self.attn = AttnBlock(c) if attn else nn.Identity()

    def forward(self, x):
        return self.res2(self.attn(self.res1(x)))


class Encoder(nn.Module):
    """(B, 3, H, W) -> (B, out_channels, h, w). `level_attn`: self-attention after each ResNet block of the lowest
    resolution; `mid_attn`: between the two middle ResNet blocks (VQGAN has both, MAR's KL-VAE encoder both)."""

    def __init__(self, ch, ch_mult, num_res_blocks, out_channels, level_attn=False, mid_attn=False, dropout=0.0):
        super().__init__()
        widths, n = [ch * m for m in ch_mult], len(ch_mult)
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.levels = nn.ModuleList(
            Level(ch if i == 0 else widths[i - 1], widths[i], num_res_blocks, level_attn and i == n - 1,
                  Downsample if i < n - 1 else None, dropout) for i in range(n))
        self.mid = Mid(widths[-1], mid_attn, dropout)
        self.norm_out, self.conv_out = norm(widths[-1]), nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, x):  # (B, 3, H, W) -> (B, out_channels, h, w)
        h = self.conv_in(x)
        for level in self.levels:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, in_channels, h, w) -> (B, 3, H, W), the encoder mirrored with one more ResNet block per level.
    (MAR's KL-VAE decoder has attention in its middle block only: level_attn=False, mid_attn=True.)"""

    def __init__(self, ch, ch_mult, num_res_blocks, in_channels, level_attn=False, mid_attn=False, dropout=0.0):
        super().__init__()
        widths, n = [ch * m for m in ch_mult], len(ch_mult)
        self.conv_in = nn.Conv2d(in_channels, widths[-1], 3, padding=1)
        self.mid = Mid(widths[-1], mid_attn, dropout)
        # levels in the order they run: lowest resolution first (as LlamaGen stores them)
        self.levels = nn.ModuleList(
            Level(widths[min(i + 1, n - 1)], widths[i], num_res_blocks + 1, level_attn and i == n - 1,
                  Upsample if i > 0 else None, dropout) for i in reversed(range(n)))
        self.norm_out, self.conv_out = norm(widths[0]), nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, z):  # (B, in_channels, h, w) -> (B, 3, H, W)
        h = self.mid(self.conv_in(z))
        for level in self.levels:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def vqgan_encoder_decoder(cfg: VQVAEConfig):
    """The VQGAN pair of both VQ tokenizers: attention (if cfg.attn) at the lowest resolution and in the middle."""
    shape = (cfg.ch, cfg.ch_mult, cfg.num_res_blocks, cfg.z_channels, cfg.attn, cfg.attn, cfg.dropout)
    return Encoder(*shape), Decoder(*shape)


@register("vqvae", VQVAEConfig)
class VQVAE(Tokenizer):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__(cfg)
        self.encoder, self.decoder = vqgan_encoder_decoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.code_dim, 1)
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.code_dim, cfg.beta, l2_norm=cfg.l2_norm, ema=cfg.ema,
                                         ema_decay=cfg.ema_decay, restart_after=cfg.restart_after,
                                         entropy_weight=cfg.entropy_weight, rotation_trick=cfg.rotation_trick,
                                         init=cfg.codebook_init)
        self.post_quant_conv = nn.Conv2d(cfg.code_dim, cfg.z_channels, 1)

    @property
    def last_layer(self) -> nn.Parameter:  # where the GAN's adaptive weight compares gradients: the decoder's last conv
        return self.decoder.conv_out.weight

    def quantize(self, images):
        """Images in [-1, 1] -> (z_q (B, C, h, w) with the straight-through gradient, tokens (B, h, w), the VQ loss,
        stats): the VectorQuantizer's output (MaskGITVQ.quantize returns the same four)."""
        self.check_images(images)
        return self.quantizer(self.quant_conv(self.encoder(images)))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> token map (B, h, w) of code indices."""
        return self.quantize(images)[1]

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token map (B, h, w) -> images (B, 3, H, W), roughly in [-1, 1] (not clamped)."""
        return self.decode_codes(self.quantizer.lookup(tokens))

    def decode_codes(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z_q))

    def forward(self, images: torch.Tensor):
        """-> reconstructions, losses {"recon", "vq", "total"}, stats (usage, perplexity, ...)."""
        z_q, indices, vq_loss, stats = self.quantize(images)
        recon = self.decode_codes(z_q)
        return recon, reconstruction_losses(recon, images, vq_loss, self.cfg.recon_loss), stats


def reconstruction_losses(recon, images, vq_loss, kind="l2") -> dict:
    """{"recon": L2 (or L1) between reconstructions and images (in fp32), "vq": the quantizer's, "total": both}."""
    dist = F.mse_loss if kind == "l2" else F.l1_loss
    recon_loss = dist(recon.float(), images.float())
    return {"recon": recon_loss, "vq": vq_loss, "total": recon_loss + vq_loss}
