"""A continuous tokenizer: the KL-regularised autoencoder of latent diffusion, as MAR's AutoencoderKL that FlowAR uses.

No codebook. The encoder predicts, for every latent position, a Gaussian: a mean and a log-variance per channel.

    image (B, 3, H, W) --Encoder--> (mean, logvar) (B, C, h, w) each
        training:  z = mean + exp(logvar / 2) * noise          (the reparameterisation trick: gradients flow)
        encoding:  z = mean                                      (the posterior's mode: deterministic codes)
    z --Decoder--> image

Loss: reconstruction (L2, or L1) + kl_weight * KL(N(mean, var) || N(0, 1)). The KL term is tiny in practice
(LDM and MAR: 1e-6 against a reconstruction error summed over pixels): it only keeps the latents from drifting to
huge values, so their scale is arbitrary. A generator wants them near unit variance, so codes are the latents
times a `latent_scale` (FlowAR multiplies MAR's KL-16 latents by 0.2325 = 1 / 4.3): given in the config, or, when
that is 0, estimated from the data while the tokenizer trains (a running average of 1 / std of the latents,
kept in the checkpoint like BatchNorm's statistics).

    tok = KLAutoencoder(KLAutoencoderConfig(image_size=32, latent_channels=4))
    latents = tok.encode(images)        # (B, 4, 8, 8) floats, scaled to about unit std
    images = tok.decode(latents)        # (B, 3, 32, 32)

The network is the VQGAN / LDM encoder and decoder of autoencoder.py (the encoder outputs 2C channels: mean and
log-variance), with MAR's attention placement: the encoder attends at its lowest resolution (16x16 for KL-16) and in
the middle, the decoder in the middle only.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn

from .autoencoder import Decoder, Encoder, check_autoencoder_config, reconstruction_losses
from .models import Tokenizer, register


@dataclass
class KLAutoencoderConfig:
    renamed = {"z_channels": "latent_channels"}  # fields of checkpoints from an older minivar, old -> new

    image_size: int = 32  # input images are (3, image_size, image_size) in [-1, 1]
    ch: int = 32  # width of the full-resolution level (MAR's KL-16: 128)
    ch_mult: tuple = (1, 2, 2)  # len - 1 = number of 2x downsamplings (KL-16: (1, 1, 2, 2, 4))
    num_res_blocks: int = 1  # ResNet blocks per encoder level (KL-16: 2; the decoder has one more)
    latent_channels: int = 4  # latent channels C (KL-16: 16)
    encoder_attn: bool = False  # self-attention at the encoder's lowest resolution (KL-16: yes, at 16x16)
    mid_attn: bool = True  # self-attention in the middle blocks of encoder and decoder (LDM, MAR)
    dropout: float = 0.0
    kl_weight: float = 1e-6  # LDM / MAR, relative to the reconstruction error summed over pixels (see loss)
    recon_loss: str = "l2"  # "l2" or "l1"
    latent_scale: float = 0.0  # codes = latents * latent_scale; 0: estimated from the data while training

    def __post_init__(self):
        check_autoencoder_config(self)
        if self.latent_scale < 0 or self.kl_weight < 0:
            raise ValueError("latent_scale and kl_weight must be >= 0")

    @property
    def grid(self) -> int:
        return self.image_size // 2 ** (len(self.ch_mult) - 1)


@register("klvae", KLAutoencoderConfig)
class KLAutoencoder(Tokenizer):
    code_fields = ("latent_channels", "grid", "image_size")  # continuous latents: no codebook

    def __init__(self, cfg: KLAutoencoderConfig):
        super().__init__(cfg)
        C = cfg.latent_channels
        self.encoder = Encoder(cfg.ch, cfg.ch_mult, cfg.num_res_blocks, 2 * C, cfg.encoder_attn, cfg.mid_attn,
                               cfg.dropout)  # 2C: a mean and a log-variance per latent channel
        self.decoder = Decoder(cfg.ch, cfg.ch_mult, cfg.num_res_blocks, C, False, cfg.mid_attn, cfg.dropout)
        self.quant_conv = nn.Conv2d(2 * C, 2 * C, 1)  # (the names of LDM's, though nothing is quantised)
        self.post_quant_conv = nn.Conv2d(C, C, 1)
        self.register_buffer("latent_scale", torch.tensor(cfg.latent_scale or 1.0))
        self.register_buffer("scale_updates", torch.tensor(0))  # how many batches the running estimate has seen

    @property
    def last_layer(self) -> nn.Parameter:  # where the GAN's adaptive weight compares gradients: the decoder's last conv
        return self.decoder.conv_out.weight

    def encode_moments(self, images: torch.Tensor):
        """Images in [-1, 1] -> the posterior's (mean, logvar), each (B, C, h, w), unscaled (logvar clamped to
        [-30, 20] as LDM does)."""
        self.check_images(images)
        mean, logvar = self.quant_conv(self.encoder(images)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (B, C, h, w) -> images (B, 3, H, W), roughly in [-1, 1] (not clamped)."""
        return self.decoder(self.post_quant_conv(latents))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> codes: the posterior mean times latent_scale, (B, C, h, w) floats of about unit std."""
        return self.encode_moments(images)[0] * self.latent_scale

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (scaled latents, what encode and the generators give) -> images."""
        C, s = self.cfg.latent_channels, self.cfg.grid
        if codes.ndim != 4 or tuple(codes.shape[1:]) != (C, s, s) or not codes.is_floating_point():
            raise ValueError(f"expected float latents of shape (B, {C}, {s}, {s}), got {codes.dtype} "
                             f"{tuple(codes.shape)}" + ("; one latent without batch axis: latents[None]"
                                                        if codes.ndim == 3 else ""))
        return self.decode_latents(codes / self.latent_scale)

    def forward(self, images: torch.Tensor):
        """-> reconstructions, losses {"recon", "kl", "vq" (= the weighted KL), "total"}, stats."""
        mean, logvar = self.encode_moments(images)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if self.training else mean
        recon = self.decode_latents(z)
        kl = 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).sum((1, 2, 3)).mean()
        # LDM sums the reconstruction error over the pixels; minivar averages it, so the KL is divided by as many
        weighted = self.cfg.kl_weight * kl / images[0].numel()
        losses = reconstruction_losses(recon, images, weighted, self.cfg.recon_loss)
        std = mean.detach().float().std()
        if self.training and not self.cfg.latent_scale:
            self.update_scale(std)
        return recon, {**losses, "kl": kl}, {"latent_std": std, "latent_scale": self.latent_scale.clone()}

    @torch.no_grad()
    def update_scale(self, std: torch.Tensor):
        """latent_scale <- running mean of 1 / std over the first 100 batches, then an average with momentum
        0.99 (it follows the encoder as it trains; under DDP the buffer is rank 0's, broadcast)."""
        self.scale_updates += 1
        w = (1.0 / self.scale_updates).clamp_min(0.01)  # tensors throughout: no wait for the GPU
        self.latent_scale.mul_(1 - w).add_(w / std.clamp_min(1e-6))


__all__ = ["KLAutoencoderConfig", "KLAutoencoder"]
