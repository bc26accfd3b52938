import pytest
import torch

from minivar.autoencoder import VQVAE, VQVAEConfig
from minivar.checkpoint import save_checkpoint
from tests.helpers import tiny_vqvae_config


@pytest.fixture
def model():
    torch.manual_seed(0)
    return VQVAE(tiny_vqvae_config(ch_mult=(1, 2, 2), attn=True)).eval()


def test_shapes_and_losses(model):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon, losses, stats = model(x)
    assert recon.shape == x.shape
    assert set(losses) == {"recon", "vq", "total"}
    torch.testing.assert_close(losses["total"], losses["recon"] + losses["vq"])
    torch.testing.assert_close(losses["recon"], ((recon - x) ** 2).mean())
    assert 0 < stats["usage"] <= 1


def test_encode_decode_is_the_forward_pass(model):
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    tokens = model.encode(x)
    assert tokens.shape == (3, 8, 8) and tokens.dtype == torch.int64  # 32 / 2**2
    # equal up to float rounding: the forward pass adds z + (e - z), decode() uses e itself
    torch.testing.assert_close(model.decode(tokens), model(x)[0], atol=1e-4, rtol=1e-4)


def test_gradients_reach_encoder_decoder_and_codebook(model):
    model.train()
    _, losses, _ = model(torch.rand(2, 3, 32, 32) * 2 - 1)
    losses["total"].backward()
    for name in ("encoder.conv_in.weight", "decoder.conv_out.weight", "quantizer.codebook.weight",
                 "quant_conv.weight", "post_quant_conv.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


def test_l1_reconstruction_option():
    torch.manual_seed(0)
    m = VQVAE(tiny_vqvae_config(recon_loss="l1"))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon, losses, _ = m(x)
    torch.testing.assert_close(losses["recon"], (recon - x).abs().mean())


def test_bad_images_get_a_clear_error(model):
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\) in \[-1, 1\], got torch.float32 \(2, 1, 28, 28\)"):
        model(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="float images"):
        model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_config_checks():
    with pytest.raises(ValueError, match="divisible"):
        VQVAEConfig(image_size=30, ch_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="'l1' or 'l2'"):
        VQVAEConfig(recon_loss="huber")


def test_from_checkpoint_needs_no_flags(model, tmp_path):
    from dataclasses import asdict
    path = save_checkpoint({"model": model.state_dict(), "config": {"model": "vqvae",
                                                                     "model_config": asdict(model.cfg)}},
                           tmp_path / "ckpt.pt")
    loaded = VQVAE.from_checkpoint(path)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert loaded.cfg == model.cfg
    assert torch.equal(loaded.encode(x), model.encode(x))
