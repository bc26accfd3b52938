"""The tokenizer's losses beyond pixels (VQGAN, Esser et al. 2021; LlamaGen's tokenizer training).

    L_G = rec(x, x_hat) + w_p * LPIPS(x, x_hat) + L_VQ + lambda * w_d * hinge_G(D(x_hat))   (after disc_start)
    L_D = w_d * hinge_D(D(x), D(x_hat))                                                     (after disc_start)

- perceptual: LPIPS with a VGG16 trunk (the `lpips` package): distances between deep features, which
  punish blur far more than MSE does. Its weights download on first use (needs internet).
- adversarial: a PatchGAN discriminator (taming's NLayerDiscriminator: 4x4 convs, BatchNorm, LeakyReLU)
  judges overlapping patches real or fake; hinge losses; switched on only after `disc_start` steps so the
  autoencoder first learns to reconstruct.
- adaptive weight lambda (taming): ||grad rec|| / (||grad G|| + 1e-4) at the decoder's last layer, clamped
  to [0, 1e4] and detached, so the adversarial gradient never swamps the reconstruction gradient.
  (LlamaGen keeps this off by default; minivar turns it on, as taming does, see `TrainConfig`.)
"""

import contextlib
import warnings

import torch
import torch.nn.functional as F
from torch import nn


class PerceptualLoss(nn.Module):
    """LPIPS (VGG) between images in [-1, 1]; mean over the batch. Frozen, always in eval mode."""

    def __init__(self, pretrained: bool = True):
        super().__init__()
        try:
            import lpips
        except ImportError:
            raise ImportError("the perceptual loss needs the `lpips` package: pip install -e '.[eval]' "
                              "(or turn it off: --set perceptual_weight=0)") from None
        try:
            # pretrained=False: random trunk and heads, no download (used by the tests). lpips still calls
            # torchvision's pre-0.13 `pretrained=` API, whose deprecation warnings say nothing to a learner.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
                self.lpips = lpips.LPIPS(net="vgg", pretrained=pretrained, pnet_rand=not pretrained, verbose=False)
        except Exception as e:  # no internet: torchvision cannot fetch the VGG16 weights
            raise RuntimeError(f"LPIPS could not load its VGG16 weights ({type(e).__name__}: {e}). They download "
                               f"once on first use, which needs internet; offline, turn the perceptual term off "
                               f"with --set perceptual_weight=0") from e
        self.lpips.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True):
        # Stay in eval mode: LPIPS's heads have dropout, which taming/LlamaGen leave on by accident when the
        # surrounding loss module is put in training mode.
        return super().train(False)

    def forward(self, x, y):
        return self.lpips(x.float(), y.float()).mean()


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix / taming NLayerDiscriminator): a logit per overlapping patch, (B, 1, h', w')."""

    def __init__(self, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(3, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        c = ndf
        for i in range(1, n_layers + 1):
            c_out = ndf * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(c, c_out, 4, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.LeakyReLU(0.2)]
            c = c_out
        layers.append(nn.Conv2d(c, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():  # pix2pix / taming init
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.net(x)


def hinge_d_loss(logits_real, logits_fake):
    """Discriminator hinge loss: push real logits above +1 and fake logits below -1."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake):
    """Generator side of the hinge GAN: raise the discriminator's logits on reconstructions."""
    return -logits_fake.mean()


def adaptive_weight(rec_loss, g_loss, last_layer, max_weight=1e4):
    """taming's lambda = ||d rec / d W|| / (||d G / d W|| + 1e-4) at the decoder's last layer W, detached."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()


class TokenizerLoss(nn.Module):
    """The VQGAN objective around a VQ-VAE: holds the LPIPS network and the discriminator."""

    def __init__(self, perceptual_weight=0.0, disc_weight=0.0, disc_start=0, adaptive=True, lpips_pretrained=True):
        super().__init__()
        self.perceptual_weight, self.disc_weight = perceptual_weight, disc_weight
        self.disc_start, self.adaptive = disc_start, adaptive
        self.perceptual = PerceptualLoss(lpips_pretrained) if perceptual_weight > 0 else None
        self.discriminator = PatchDiscriminator() if disc_weight > 0 else None

    def gan_active(self, step):
        return self.discriminator is not None and step >= self.disc_start

    def generator_loss(self, images, recon, losses: dict, step: int, last_layer, discriminator=None):
        """Add the perceptual and adversarial terms to the VQ-VAE's own losses; returns (total, metrics as
        detached tensors: the training loop reads them only when it logs)."""
        rec = losses["recon"]
        metrics = {}
        if self.perceptual is not None:
            p = self.perceptual(images, recon)
            rec = rec + self.perceptual_weight * p
            metrics["perceptual"] = p.detach()
        total = rec + losses["vq"]
        if self.gan_active(step):
            g = hinge_g_loss((discriminator or self.discriminator)(recon))
            lam = adaptive_weight(rec, g, last_layer) if self.adaptive else torch.tensor(1.0)
            total = total + lam * self.disc_weight * g
            metrics.update(g_loss=g.detach(), adaptive_weight=lam)
        return total, metrics

    def discriminator_loss(self, images, recon, step, discriminator=None):
        d = discriminator or self.discriminator
        logits_real, logits_fake = d(images.detach()), d(recon.detach())
        loss = self.disc_weight * hinge_d_loss(logits_real, logits_fake)
        return loss, {"d_loss": loss.detach(), "logits_real": logits_real.detach().mean(),
                      "logits_fake": logits_fake.detach().mean()}


def no_sync(module):
    """A module's DistributedDataParallel no_sync() (gradients kept on each rank, averaged at the next backward
    outside it), or nothing to do for a plain module."""
    return module.no_sync() if hasattr(module, "no_sync") else contextlib.nullcontext()


class AdversarialObjective:
    """A tokenizer's training objective with LPIPS and the PatchGAN, as the training loop sees any objective:

        loss(x, labels, progress, step) -> (loss, metrics)   the autoencoder's loss: its own + perceptual + hinge_G
        update(step, amp) -> metrics                         then the discriminator's own step (once it is on), on
                                                             the reconstructions of that same batch, detached
        state_dict() / load_state_dict(state)                the discriminator and its optimizer, in the checkpoint
        no_sync()                                            a context in which DDP does not average gradients yet

With gradient accumulation (TrainConfig.grad_accum) the loop calls loss() once per slice of the batch; the
discriminator's step then runs over the same slices, its gradients accumulated the same way.

    `forward` is the tokenizer (or its DistributedDataParallel wrapper) and `discriminator` likewise; `terms` is the
    TokenizerLoss holding both networks; `optimizer` the discriminator's (None without one: LPIPS alone)."""

    def __init__(self, tokenizer, terms: TokenizerLoss, optimizer=None, wrap=lambda m: m):
        self.tokenizer, self.terms, self.optimizer = tokenizer, terms, optimizer
        self.forward = wrap(tokenizer)
        self.discriminator = wrap(terms.discriminator) if optimizer is not None else None
        self.seen = []  # (images, reconstructions detached) of each slice of the batch since the last update

    def loss(self, x, labels, progress, step):
        recon, losses, stats = self.forward(x)
        total, extra = self.terms.generator_loss(x, recon, losses, step, self.tokenizer.last_layer, self.discriminator)
        self.seen.append((x, recon.detach()))  # detached: the discriminator's step needs the pixels, not the graph
        return total, {**{k: v.detach() for k, v in losses.items() if k != "total"}, **stats, **extra}

    def update(self, step, amp) -> dict:
        seen, self.seen = self.seen, []
        if self.optimizer is None or not self.terms.gan_active(step):
            return {}
        self.optimizer.zero_grad(set_to_none=True)
        metrics = {}
        for i, (x, recon) in enumerate(seen):  # one slice at a time, as the autoencoder's step: the same memory
            with contextlib.nullcontext() if i == len(seen) - 1 else no_sync(self.discriminator):
                with amp:
                    d_loss, m = self.terms.discriminator_loss(x, recon, step, self.discriminator)
                (d_loss / len(seen)).backward()
            metrics = {k: metrics.get(k, 0) + v / len(seen) for k, v in m.items()}
        self.optimizer.step()
        return metrics

    def no_sync(self):
        return no_sync(self.forward)

    def state_dict(self) -> dict:
        if self.optimizer is None:
            return {}
        return {"discriminator": self.terms.discriminator.state_dict(), "optimizer_d": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict):
        if self.optimizer is not None:
            self.terms.discriminator.load_state_dict(state["discriminator"])
            self.optimizer.load_state_dict(state["optimizer_d"])
