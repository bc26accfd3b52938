"""The MaskGIT VQGAN: the tokenizer whose 1024 codes RAR's released models predict (f16: 256x256 -> 16x16 tokens).

A plain VQ autoencoder (Esser et al.'s VQGAN as MaskGIT re-implemented it, without attention layers):

    image --Encoder--> z (B, C, h, w) --nearest code--> tokens (B, h, w) --codebook--> z_q --Decoder--> image

It differs from minivar's VQVAE (autoencoder.py) in ways the released weights depend on: convolutions in the ResNet
blocks have no bias, the encoder downsamples by average pooling (no strided conv), the decoder upsamples by nearest
neighbour then a 3x3 conv, the codebook is searched by plain squared distance (no l2-norm, no quant_conv), and the
images it was trained on are in [0, 1]. minivar's tokenizers take [-1, 1]; this one maps them, and its decode clamps
to [0, 1] as the release does before mapping back.

A quirk of the release (modeling/modules/maskgit_vqgan.py, ResnetBlock): where a block changes the width, its
shortcut is applied to the block's *output*, not its input (`residual = nin_shortcut(hidden_states)` after conv2),
so such a block computes h + W h with no skip from its input. The released weights were trained that way, so
minivar keeps it (`skip_from_output`), and says so here rather than silently "fixing" it.

    tok = official.load_maskgit_vq(torch.load("maskgit-vqgan-imagenet-f16-256.bin", weights_only=True))
    tokens = tok.encode(images)        # images (B, 3, 256, 256) in [-1, 1] -> (B, 16, 16) in [0, 1024)
    images = tok.decode(tokens)        # -> (B, 3, 256, 256) in [-1, 1]
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .autoencoder import reconstruction_losses
from .models import Tokenizer, register
from .vq import nearest_code


@dataclass
class MaskGITVQConfig:
    renamed = {"z_channels": "code_dim"}  # fields of checkpoints from an older minivar, old -> new (models.py)

    image_size: int = 256  # input images are (3, image_size, image_size) in [-1, 1]
    ch: int = 128  # the release's hidden_channels
    ch_mult: tuple = (1, 1, 2, 2, 4)  # channel_mult; len - 1 = number of 2x downsamplings
    num_res_blocks: int = 2
    code_dim: int = 256  # the release's z_channels: the quantizer reads the encoder's output directly
    codebook_size: int = 1024
    beta: float = 0.25  # the release's commitment_cost: it weights the *codebook* term, the encoder's has weight 1
    dropout: float = 0.0

    def __post_init__(self):
        self.ch_mult = tuple(self.ch_mult)
        if self.ch % 32 or any(self.ch * m % 32 for m in self.ch_mult):
            raise ValueError(f"GroupNorm(32) needs every width divisible by 32: ch {self.ch}, ch_mult {self.ch_mult}")
        if self.image_size % 2 ** (len(self.ch_mult) - 1):
            raise ValueError(f"image_size {self.image_size} is not divisible by 2^{len(self.ch_mult) - 1}")

    @property
    def grid(self) -> int:
        return self.image_size // 2 ** (len(self.ch_mult) - 1)


def group_norm(ch):
    return nn.GroupNorm(32, ch, eps=1e-6)


class ResBlock(nn.Module):
    """norm -> SiLU -> conv -> norm -> SiLU -> dropout -> conv (bias-free convs), plus the skip (see the module
    docstring for the width-changing blocks)."""

    def __init__(self, c_in, c_out, dropout=0.0):
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.norm2, self.conv2 = group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.skip_from_output = c_in != c_out
        if self.skip_from_output:
            self.skip = nn.Conv2d(c_out, c_out, 1, bias=False)  # (c_out -> c_out: it reads the output)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + (self.skip(h) if self.skip_from_output else x)


class Encoder(nn.Module):
    def __init__(self, cfg: MaskGITVQConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.conv_in = nn.Conv2d(3, cfg.ch, 3, padding=1, bias=False)
        self.levels = nn.ModuleList()
        c = cfg.ch
        for w in widths:
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(c, w, cfg.dropout))
                c = w
            self.levels.append(blocks)
        self.mid = nn.Sequential(*[ResBlock(c, c, cfg.dropout) for _ in range(cfg.num_res_blocks)])
        self.norm_out, self.conv_out = group_norm(c), nn.Conv2d(c, cfg.code_dim, 1)

    def forward(self, x):
        x = self.conv_in(x)
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                x = block(x)
            if i < len(self.levels) - 1:
                x = F.avg_pool2d(x, 2)
        return self.conv_out(F.silu(self.norm_out(self.mid(x))))


class Decoder(nn.Module):
    def __init__(self, cfg: MaskGITVQConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        c = widths[-1]
        self.conv_in = nn.Conv2d(cfg.code_dim, c, 3, padding=1)
        self.mid = nn.Sequential(*[ResBlock(c, c, cfg.dropout) for _ in range(cfg.num_res_blocks)])
        self.levels = nn.ModuleList()  # coarsest first
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(widths))):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(c, widths[i], cfg.dropout))
                c = widths[i]
            self.levels.append(blocks)
            self.upsample.append(nn.Conv2d(c, c, 3, padding=1) if i > 0 else nn.Identity())
        self.norm_out, self.conv_out = group_norm(c), nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, z):
        x = self.mid(self.conv_in(z))
        for blocks, up in zip(self.levels, self.upsample):
            for block in blocks:
                x = block(x)
            if isinstance(up, nn.Conv2d):
                x = up(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(x)))


@register("maskgitvq", MaskGITVQConfig)
class MaskGITVQ(Tokenizer):
    def __init__(self, cfg: MaskGITVQConfig):
        super().__init__(cfg)
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        self.codebook = nn.Embedding(cfg.codebook_size, cfg.code_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / cfg.codebook_size, 1.0 / cfg.codebook_size)

    @property
    def last_layer(self) -> nn.Parameter:  # where the GAN's adaptive weight compares gradients: the decoder's last conv
        return self.decoder.conv_out.weight

    def quantize(self, images):
        """Images in [-1, 1] -> (z_q (B, C, h, w) with the straight-through gradient, tokens (B, h, w), the VQ loss,
        stats): what VQVAE.quantize returns. The loss is the release's: codebook term + beta * commitment term."""
        self.check_images(images)
        z = self.encoder((images + 1) / 2)  # the release's encoder reads [0, 1]
        B, C, h, w = z.shape
        tokens = nearest_code(z.permute(0, 2, 3, 1).reshape(-1, C), self.codebook.weight).view(B, h, w)
        zq = self.codebook(tokens).permute(0, 3, 1, 2)
        vq = F.mse_loss(zq.detach(), z) + self.cfg.beta * F.mse_loss(zq, z.detach())
        return z + (zq - z).detach(), tokens, vq, {}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.quantize(images)[1]

    def check_tokens(self, tokens):
        s, V = self.cfg.grid, self.cfg.codebook_size
        if tokens.dtype != torch.long or tokens.ndim != 3 or tokens.shape[1:] != (s, s):
            raise ValueError(f"expected token maps as a LongTensor (B, {s}, {s}), got {tokens.dtype} "
                             f"{tuple(tokens.shape)}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= V):
            raise ValueError(f"tokens must lie in [0, {V}), got [{tokens.min().item()}, {tokens.max().item()}]")

    def decode_raw(self, tokens):
        """Token maps -> the decoder's output, in the release's [0, 1] frame and not clamped."""
        return self.decoder(self.codebook(tokens).permute(0, 3, 1, 2))

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        self.check_tokens(tokens)
        return self.decode_raw(tokens).clamp(0.0, 1.0) * 2 - 1  # clamped as the release, then to [-1, 1]

    def forward(self, images):
        """-> reconstructions in [-1, 1], losses {"recon", "vq", "total"}, stats: VQ-VAE training with the
        release's commitment loss and straight-through gradients (for fine-tuning; RAR uses it frozen)."""
        z_q, _, vq, stats = self.quantize(images)
        recon = self.decoder(z_q) * 2 - 1
        return recon, reconstruction_losses(recon, images, vq), stats


__all__ = ["MaskGITVQConfig", "MaskGITVQ"]
