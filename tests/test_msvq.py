"""VAR's multi-scale residual quantizer: the algorithm's invariants, and the official outputs reproduced."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from minivar.msvq import MultiScaleQuantizer, MultiScaleVQVAE, MultiScaleVQVAEConfig, phi_index
from minivar.official import _sd_vae_name, load_var_vqvae
from minivar.token_cache import code_rows

FIXTURES = Path(__file__).parent / "fixtures"


def test_phi_index_is_vars_choice():
    assert [phi_index(k, 10, 4) for k in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]  # the 256 px schedule
    assert [phi_index(k, 4, 4) for k in range(4)] == [0, 1, 2, 3]
    assert [phi_index(k, 6, 1) for k in range(6)] == [0] * 6
    assert [phi_index(k, 6, 6) for k in range(6)] == list(range(6))


def quantizer(**kw):
    torch.manual_seed(0)
    q = MultiScaleQuantizer(**{**dict(codebook_size=32, dim=4, scales=(1, 2, 3, 4, 6, 8)), **kw})
    q.codebook.weight.data.normal_()
    return q


def test_decode_of_encode_is_the_cumulative_f_hat_and_shapes_follow_the_schedule():
    q = quantizer()
    f = torch.randn(3, 4, 8, 8)
    tokens, cumulative = q.residual_quantize(f)
    assert [tuple(t.shape) for t in tokens] == [(3, s, s) for s in (1, 2, 3, 4, 6, 8)]
    decoded = q.tokens_to_fhat(tokens, cumulative=True)
    for a, b in zip(decoded, cumulative):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(q.tokens_to_fhat(tokens), cumulative[-1])


def test_each_scale_quantizes_what_is_left_over():
    """By hand: scale k's tokens are the nearest codes of the area-downsampled residual f - f_hat_{k-1}."""
    q = quantizer()
    f = torch.randn(2, 4, 8, 8)
    tokens, cumulative = q.residual_quantize(f)
    previous = torch.zeros_like(f)
    for k, s in enumerate(q.scales):
        residual = F.interpolate(f - previous, size=(s, s), mode="area")
        d = (residual.permute(0, 2, 3, 1)[..., None, :] - q.codebook.weight).pow(2).sum(-1)  # (B, s, s, K)
        assert torch.equal(tokens[k], d.argmin(-1))
        previous = cumulative[k]


def test_teacher_forcing_input_by_hand():
    q = quantizer()
    f = torch.randn(2, 4, 8, 8)
    tokens, cumulative = q.residual_quantize(f)
    x = q.teacher_forcing_input(tokens)
    assert x.shape == (2, 4 + 9 + 16 + 36 + 64, 4)  # every scale but the first, C = 4
    start = 0
    for k, s in enumerate(q.scales[1:]):
        expected = F.interpolate(cumulative[k], size=(s, s), mode="area").flatten(2).transpose(1, 2)
        torch.testing.assert_close(x[:, start:start + s * s], expected)
        start += s * s


def test_next_input_rebuilds_the_teacher_forcing_input_scale_by_scale():
    q = quantizer()
    tokens, cumulative = q.residual_quantize(torch.randn(2, 4, 8, 8))
    x, f_hat, pieces = q.teacher_forcing_input(tokens), None, []
    for k, t in enumerate(tokens):
        f_hat, nxt = q.next_input(k, f_hat, t)
        if k < len(tokens) - 1:
            pieces.append(nxt.flatten(2).transpose(1, 2))
    torch.testing.assert_close(torch.cat(pieces, 1), x)
    torch.testing.assert_close(f_hat, cumulative[-1])


def test_loss_is_the_per_scale_mean_and_gradients_reach_codes_phi_and_encoder():
    q = quantizer()
    f = torch.randn(2, 4, 8, 8, requires_grad=True)
    f_hat, tokens, loss, stats = q(f)
    _, cumulative = q.residual_quantize(f.detach())
    expected = sum(1.25 * F.mse_loss(c, f.detach()) for c in cumulative) / len(cumulative)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(f_hat, cumulative[-1])  # the value is the quantized latent ...
    (grad_f,) = torch.autograd.grad(f_hat.sum(), f, retain_graph=True)
    assert torch.equal(grad_f, torch.ones_like(f))  # ... the gradient passes straight through to f
    loss.backward()
    assert q.codebook.weight.grad.abs().sum() > 0 and q.phis[0].conv.weight.grad.abs().sum() > 0
    assert f.grad.abs().sum() > 0  # the commitment half pulls the encoder output towards f_hat
    assert 0 < stats["usage"] <= 1 and set(stats) >= {"usage_0", "usage_5", "perplexity"}


def test_every_scale_reduces_the_residual_of_a_trained_tokenizer_on_real_images(tmp_path):
    from minivar.data import load_dataset
    from minivar.train import TrainConfig, train
    from tests.helpers import QUICK
    cfg = TrainConfig(name="ms", model="msvqvae", out_dir=str(tmp_path), batch_size=32, lr=3e-3, warmup_steps=5,
                      max_steps=40, eval_every=100, ckpt_every=100, **QUICK,
                      model_config=MultiScaleVQVAEConfig(image_size=32, ch=16, ch_mult=(1, 2, 2), z_channels=16,
                                                         code_dim=8, codebook_size=64, scales=(1, 2, 4, 8)))
    model = train(cfg, progress=False)["model"]
    test = load_dataset("emoji", "test")
    images = torch.stack([test[i][0] for i in range(0, 365, 5)])
    with torch.no_grad():
        f = model.latent(images)
        _, cumulative = model.quantizer.residual_quantize(f)
    errors = [f.pow(2).mean().item()] + [(f - c).pow(2).mean().item() for c in cumulative]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors


def test_config_checks_name_the_fix():
    with pytest.raises(ValueError, match="end at the latent grid 8"):
        MultiScaleVQVAEConfig(image_size=32, ch_mult=(1, 2, 2), scales=(1, 2, 4))
    with pytest.raises(ValueError, match="no ema"):
        MultiScaleVQVAEConfig(image_size=32, ch_mult=(1, 2, 2), ema=True)
    model = MultiScaleVQVAE(MultiScaleVQVAEConfig(image_size=32, ch=8, ch_mult=(1, 2, 2), z_channels=8, code_dim=4,
                                                  codebook_size=16, scales=(1, 2, 4, 8)))
    with pytest.raises(ValueError, match=r"sizes \[1, 2, 4, 8\]"):
        model.decode_scales([torch.zeros(1, 2, 2, dtype=torch.long)] * 4)
    with pytest.raises(ValueError, match=r"all 4 scales \[1, 2, 4, 8\], got 1"):  # not an image from one scale
        model.decode_scales([torch.zeros(1, 1, 1, dtype=torch.long)])
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        model.encode_scales(torch.zeros(1, 3, 16, 16))
    tokens = model.encode(torch.zeros(2, 3, 32, 32))  # the contract's codes: one map per scale
    assert [t.shape[1:] for t in tokens] == [(1, 1), (2, 2), (4, 4), (8, 8)]
    flat = code_rows(tokens)  # as the token cache stores them
    assert flat.shape == (2, 1 + 4 + 16 + 64)
    assert all(torch.equal(a, b) for a, b in zip(model.split_scales(flat), tokens))
    with pytest.raises(ValueError, match="split_scales"):
        model.decode(flat)


# ------------------------------------------------------------------------------------ the official VAR VQVAE

@pytest.fixture(scope="module")
def var_vae():
    golden = torch.load(FIXTURES / "var_vqvae_tiny.pt", weights_only=True)
    kw = {k: v for k, v in golden["kwargs"].items() if k != "test_mode"}
    ddconfig = golden["ddconfig_effective"]  # VAR hard-codes these; the fixture's model is smaller
    model = load_var_vqvae(golden["state_dict"], ch_mult=tuple(ddconfig["ch_mult"]),
                           num_res_blocks=ddconfig["num_res_blocks"], **kw)
    return golden, model


def test_var_vqvae_tokens_and_latents_equal_the_official(var_vae):
    golden, model = var_vae
    with torch.no_grad():
        torch.testing.assert_close(model.latent(golden["images"]), golden["f"], atol=1e-5, rtol=1e-4)
    tokens = model.encode_scales(golden["images"])  # official img_to_idxBl, as (B, s, s) maps
    for t, ref in zip(tokens, golden["idx_Bl"]):
        assert torch.equal(t.flatten(1), ref)
    cumulative = model.quantizer.tokens_to_fhat(tokens, cumulative=True)
    for a, b in zip(cumulative, golden["f_hat_scales"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_var_vqvae_reconstructions_teacher_forcing_and_loss_equal_the_official(var_vae):
    golden, model = var_vae
    tokens = [t.view(-1, s, s) for t, s in zip(golden["idx_Bl"], model.cfg.scales)]
    torch.testing.assert_close(model.decode_scales(tokens), golden["recon"], atol=1e-4, rtol=1e-4)
    for a, b in zip(model.decode_scales(tokens, every_scale=True), golden["recon_all"]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.quantizer.teacher_forcing_input(tokens), golden["var_input"], atol=1e-5, rtol=1e-4)
    f_hat, _, loss, _ = model.quantizer(golden["f"])
    torch.testing.assert_close(f_hat, golden["vq_f_hat"], atol=1e-5, rtol=1e-4)
    assert loss.item() == pytest.approx(float(golden["vq_loss"]), rel=1e-5)
    f_hat = None
    for k, t in enumerate(tokens):  # the inference path (official get_next_autoregressive_input)
        f_hat, nxt = model.quantizer.next_input(k, f_hat, t)
        torch.testing.assert_close(nxt, golden["ar_next_token_maps"][k], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(f_hat, golden["ar_f_hat_final"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", ["qsr4", "qsr0", "qsr1", "qsr3", "qsr4_znorm"])
def test_var_quantizer_with_the_256px_schedule_and_every_phi_sharing(variant):
    golden = torch.load(FIXTURES / "var_quant10_tiny.pt", weights_only=True)[variant]
    kw = golden["kwargs"]
    share, scales = kw["share_quant_resi"], tuple(kw["v_patch_nums"])
    q = MultiScaleQuantizer(kw["vocab_size"], kw["Cvae"], scales, kw["beta"], kw["quant_resi"],
                            n_phi=len(scales) if share == 0 else share, l2_norm=kw["using_znorm"])
    q.load_state_dict({_sd_vae_name("quantize." + k, 0).removeprefix("quantizer."): v
                       for k, v in golden["state_dict"].items() if k != "ema_vocab_hit_SV"})
    assert q.phi_of_scale == list(golden["phi_index_per_scale"])
    tokens = q.encode_scales(golden["f"])
    for t, ref in zip(tokens, golden["idx_Bl"]):
        assert torch.equal(t.flatten(1), ref)
    for a, b in zip(q.tokens_to_fhat(tokens, cumulative=True), golden["f_hat_scales"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(q.teacher_forcing_input(tokens), golden["var_input"], atol=1e-5, rtol=1e-4)
    _, _, loss, _ = q(golden["f"])
    assert loss.item() == pytest.approx(float(golden["vq_loss"]), rel=1e-5)


def test_var_vqvae_loader_names_a_wrong_config(var_vae):
    golden, _ = var_vae
    with pytest.raises(ValueError, match="check vocab_size"):
        load_var_vqvae(golden["state_dict"], ch_mult=(1, 1, 2), num_res_blocks=1,
                       **{**golden["kwargs"], "vocab_size": 32})
    with pytest.raises(ValueError, match="unknown VAR VQVAE arguments"):
        load_var_vqvae(golden["state_dict"], patch_size=16)
