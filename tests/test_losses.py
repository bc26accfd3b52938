import pytest
import torch

from minivar.losses import (
    PatchDiscriminator,
    PerceptualLoss,
    TokenizerLoss,
    adaptive_weight,
    hinge_d_loss,
    hinge_g_loss,
)


def test_hinge_losses_by_hand():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # real: relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; fake: relu(1-2)=0, relu(1+0)=1 -> 0.5
    torch.testing.assert_close(hinge_d_loss(real, fake), torch.tensor(0.5 * (0.25 + 0.5)))
    torch.testing.assert_close(hinge_g_loss(fake), torch.tensor(1.0))


def test_patch_discriminator_shapes_like_taming():
    d = PatchDiscriminator()
    assert d(torch.zeros(2, 3, 256, 256)).shape == (2, 1, 30, 30)  # taming / LlamaGen at 256 px
    assert d(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 2, 2)
    assert sum(p.numel() for p in d.parameters()) == pytest.approx(2.77e6, rel=0.01)


def test_adaptive_weight_balances_gradient_norms():
    w = torch.randn(4, 4, requires_grad=True)
    x = torch.randn(4)
    rec = (w @ x).pow(2).sum()
    g = 10 * (w @ x).sum()
    lam = adaptive_weight(rec, g, w)
    g_rec = torch.autograd.grad(rec, w, retain_graph=True)[0]
    g_g = torch.autograd.grad(g, w)[0]
    torch.testing.assert_close(lam, g_rec.norm() / (g_g.norm() + 1e-4))
    assert not lam.requires_grad


def test_lpips_with_a_random_backbone_needs_no_download():
    torch.manual_seed(0)
    lp = PerceptualLoss(pretrained=False)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert lp(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert lp(x, x.flip(-1)).item() > 0
    lp.train()
    assert not lp.lpips.training  # stays in eval mode: no dropout in the loss


def test_offline_lpips_says_how_to_turn_it_off(monkeypatch):
    import lpips

    def no_internet(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(lpips, "LPIPS", no_internet)
    with pytest.raises(RuntimeError, match="perceptual_weight=0"):
        PerceptualLoss(pretrained=True)


def test_tokenizer_loss_switches_the_gan_on_at_disc_start():
    torch.manual_seed(0)
    loss_fn = TokenizerLoss(disc_weight=0.5, disc_start=10)
    last = torch.randn(3, 3, 3, 3, requires_grad=True)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    recon = torch.nn.functional.conv2d(images, last, padding=1)
    losses = {"recon": (recon - images).pow(2).mean(), "vq": torch.tensor(0.1)}
    before, m0 = loss_fn.generator_loss(images, recon, losses, step=9, last_layer=last)
    torch.testing.assert_close(before, losses["recon"] + 0.1)
    assert "g_loss" not in m0
    after, m1 = loss_fn.generator_loss(images, recon, losses, step=10, last_layer=last)
    expected = losses["recon"] + 0.1 + m1["adaptive_weight"] * 0.5 * m1["g_loss"]
    torch.testing.assert_close(after, torch.as_tensor(expected, dtype=after.dtype))
