"""Metrics: PSNR and codebook usage / perplexity (FID and friends arrive with notebook 02)."""

import torch

from .vq import usage_stats


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, for images in [-1, 1] (B, 3, H, W) -> (B,).

    Computed on the [0, 1] scale, as usual: PSNR = 10 log10(1 / MSE). 20 dB is blurry, 30 dB is close.
    """
    if x.shape != y.shape:
        raise ValueError(f"psnr needs two image batches of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    mse = ((x.float().clamp(-1, 1) - y.float().clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


@torch.no_grad()
def evaluate_tokenizer(model, loader, device="cpu", max_batches=None) -> dict:
    """Test-set PSNR of reconstructions, and codebook usage / perplexity over all tokens of the set."""
    model.eval()
    psnrs, tokens = [], []
    for i, (images, _) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        images = images.to(device)
        recon, _, _ = model(images)
        psnrs.append(psnr(recon, images).cpu())
        tokens.append(model.encode(images).flatten().cpu())
    stats = usage_stats(torch.cat(tokens), model.cfg.codebook_size)
    return {"psnr": torch.cat(psnrs).mean().item(), "usage": stats["usage"].item(),
            "perplexity": stats["perplexity"].item()}
