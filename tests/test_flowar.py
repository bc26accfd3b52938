"""FlowAR and its continuous tokenizer: flow-matching math, the sampler, a tiny model that learns, and the release
reproduced from its weights (golden fixtures, tests/fixtures/README.md)."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from minivar.flow_matching import MLPHead, TransformerHead, euler_sample, flow_matching_loss, time_grid
from minivar.flowar import FlowAR, FlowARConfig, next_scale_input
from minivar.kl_autoencoder import KLAutoencoder, KLAutoencoderConfig
from minivar.models import build
from minivar.official import load_flowar, load_mar_vae
from tests.helpers import fit

FIXTURES = Path(__file__).parent / "fixtures"


def tiny_tokenizer():
    torch.manual_seed(0)
    return KLAutoencoder(KLAutoencoderConfig(image_size=32, ch=8, ch_mult=(1, 2, 2), latent_channels=4)).eval()


def tiny_flowar(**kw):
    torch.manual_seed(0)
    cfg = FlowARConfig(**{**dict(num_classes=3, dim=32, n_head=2, encoder_depth=1, decoder_depth=1, head_width=64,
                                 head_depth=1, class_dropout=0.0), **kw})
    return build("flowar", cfg, tiny_tokenizer())


# ------------------------------------------------------------------------------------------ flow matching

def test_the_loss_regresses_the_straight_line_velocity():
    """x_t = (1 - t) x + t e, target e - x: a head that outputs exactly e - x has zero loss."""
    x, noise, t = torch.randn(3, 5, 2), torch.randn(3, 5, 2), torch.tensor([0.0, 0.5, 1.0])

    def oracle(x_t, t_, z):  # knows the answer
        return noise - x

    assert torch.all(flow_matching_loss(oracle, x, None, t, noise) == 0)
    zero = flow_matching_loss(lambda x_t, t_, z: torch.zeros_like(x_t), x, None, t, noise)
    torch.testing.assert_close(zero, (noise - x).pow(2).flatten(1).mean(1))


def test_euler_on_a_known_straight_field_lands_on_the_data():
    """The velocity of the straight path to a point c is (x - c) / t: Euler follows a line exactly."""
    c = torch.randn(2, 3, 4)
    out = euler_sample(lambda x, t, z: (x - c) / t.view(-1, 1, 1), torch.randn(2, 3, 4), None, num_steps=10)
    torch.testing.assert_close(out.float(), c, atol=1e-5, rtol=0)


def test_heun_is_more_accurate_than_euler_on_a_curved_field():
    """dx/dt = -x has solution x(0) = x(1) e; with 6 steps Heun's error is far smaller than Euler's."""
    x1 = torch.randn(4, 2, 3, dtype=torch.float64)
    exact = x1 * torch.e
    errors = {h: (euler_sample(lambda x, t, z: -x, x1, None, 6, heun=h) - exact).abs().max().item() for h in (0, 1)}
    assert errors[1] < errors[0] / 5, errors


def test_the_time_grid_is_the_releases():
    assert torch.equal(time_grid(50), torch.linspace(1, 0, 51, dtype=torch.float64))
    g = time_grid(6)
    assert g[0] == 1 and g[-1] == 0 and len(g) == 7 and torch.all(g[1:] < g[:-1])
    assert g[2].item() == pytest.approx(0.3)  # half the steps stretch over [1, 0.3]
    with pytest.raises(ValueError, match="at least 1 step"):
        time_grid(0)


def test_guidance_is_applied_only_inside_its_interval():
    """Outside [low, high] each half follows its own velocity; inside, both get uncond + s (cond - uncond)."""
    calls = []

    def field(x, t, z):
        calls.append((float(t[0]), x.shape[0], torch.equal(x[:2], x[2:])))
        return z  # constant velocities: cond rows z[:2], uncond rows z[2:]

    z = torch.randn(4, 3, 1)
    euler_sample(field, torch.randn(4, 3, 1), z, num_steps=4, guidance=3.0, guidance_high=0.5)
    assert [same for t, _, same in calls if t > 0.5] == [False] * sum(t > 0.5 for t, _, _ in calls)
    assert all(same for t, _, same in calls if t <= 0.5)  # the conditional half is fed twice


def test_both_heads_map_tokens_to_velocities_of_their_shape_and_start_at_zero():
    x, t, z = torch.randn(2, 16, 4), torch.rand(2), torch.randn(2, 16, 32)
    for head in (MLPHead(4, 32, 64, 2), TransformerHead(4, 32, 64, 1, cross=False),
                 TransformerHead(4, 32, 64, 1, cross=True)):
        v = head(x, t, z)
        assert v.shape == x.shape and torch.all(v == 0)  # zero output layer: velocity 0 before training


# -------------------------------------------------------------------------------------- the tokenizer

def test_kl_tokenizer_codes_decode_and_the_latent_scale_is_learned_from_data():
    tok = tiny_tokenizer()
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    codes = tok.encode(x)
    assert codes.shape == (8, 4, 8, 8) and codes.dtype == torch.float32 and tok.decode(codes).shape == x.shape
    tok.train()
    for _ in range(3):
        _, losses, stats = tok(x)
    mean, logvar = tok.encode_moments(x)
    assert float(tok.latent_scale) == pytest.approx(1 / mean.std().item(), rel=1e-3)  # the same batch, three times
    kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum((1, 2, 3)).mean()
    torch.testing.assert_close(losses["kl"], kl, rtol=1e-4, atol=1e-4)
    tok.eval()
    assert tok.encode(x).std().item() == pytest.approx(1.0, rel=1e-3)  # codes of about unit std
    with pytest.raises(ValueError, match=r"latents\[None\]"):
        tok.decode(codes[0])


def test_a_fixed_latent_scale_is_kept():
    tok = KLAutoencoder(KLAutoencoderConfig(image_size=32, ch=8, latent_scale=0.2325)).train()
    tok(torch.zeros(2, 3, 32, 32))
    assert float(tok.latent_scale) == pytest.approx(0.2325)


# ------------------------------------------------------------------------------------------ the model

def test_the_next_scale_input_is_bicubic_up_then_area_down():
    y = torch.randn(2, 4, 2, 2)
    expected = F.interpolate(F.interpolate(y, size=(8, 8), mode="bicubic"), size=(4, 4), mode="area")
    torch.testing.assert_close(next_scale_input(y, 8, 4), expected)


def test_scales_double_by_default_and_generators_read_their_tokenizer():
    model = tiny_flowar()
    assert model.scales == (1, 2, 4, 8) and (model.cfg.latent_channels, model.cfg.grid) == (4, 8)
    assert model.condition(torch.randn(2, 4, 8, 8), torch.tensor([0, 2])).shape == (2, 1 + 4 + 16 + 64, 32)
    with pytest.raises(ValueError, match="not a power of 2"):
        FlowAR(FlowARConfig(latent_channels=4, grid=6, dim=32, n_head=2))
    with pytest.raises(ValueError, match=r"\(B, 4, 8, 8\)"):
        model.condition(torch.randn(2, 4, 4, 4), torch.tensor([0, 1]))


def test_the_condition_of_scale_k_sees_only_the_coarser_scales():
    """Scales 1-3 (positions 0..20) read inputs built from the 1x1 and 2x2 averages of the latent: their gradient is
    constant over each 4x4 block. The 8x8 scale (21..84) reads the 4x4 averages: constant over 2x2 blocks only."""
    model = tiny_flowar()
    latents = torch.randn(1, 4, 8, 8, requires_grad=True)
    z = model.condition(latents, torch.tensor([1]))
    for (start, end), block in (((0, 21), 4), ((21, 85), 2)):
        (g,) = torch.autograd.grad(z[:, start:end].square().sum(), latents, retain_graph=True)
        tiles = g[0].reshape(4, 8 // block, block, 8 // block, block)
        assert g.abs().sum() > 0
        torch.testing.assert_close(tiles, tiles.mean((2, 4), keepdim=True).expand_as(tiles), atol=1e-6, rtol=1e-4)
        if block == 2:  # and not over 4x4 blocks: the 4x4 averages differ inside them
            coarse = g[0].reshape(4, 2, 4, 2, 4)
            assert not torch.allclose(coarse, coarse.mean((2, 4), keepdim=True).expand_as(coarse))


@pytest.mark.parametrize("head", ["transformer", "mlp"])
def test_a_tiny_flowar_learns_fixed_latents(head):
    model = tiny_flowar(head=head).train()
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0])
    torch.manual_seed(0)
    losses = fit(model, (latents, labels), 60)
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10, (losses[:3], losses[-3:])


def test_generation_works_at_guidance_one_and_returns_every_scale():
    model = tiny_flowar()
    out = model.generate([0, 2], guidance=1.0, sample_steps=3)  # (the release crashes at cfg = 1)
    assert out.shape == (2, 4, 8, 8)
    trace = []
    last = model.generate([1], guidance=2.0, sample_steps=2, heun=True, trace=trace)
    assert [tuple(s["latent"].shape[-2:]) for s in trace] == [(1, 1), (2, 2), (4, 4), (8, 8)]
    assert torch.equal(trace[-1]["latent"], last)
    assert [s["guidance"] for s in trace] == pytest.approx([1, 4 / 3, 5 / 3, 2])  # the ramp over the scales
    path = trace[-1]["path"]  # the last ODE: noise at t = 1 to the sample at t = 0
    assert path[0][0] == 1.0 and path[-1][0] == 0.0 and torch.equal(path[-1][1], last)
    assert model.tokenizer.decode(out).shape == (2, 3, 32, 32)
    a = model.generate([0], sample_steps=3, generator=torch.Generator().manual_seed(1))
    b = model.generate([0], sample_steps=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)



def test_constant_guidance_changes_the_first_scale_that_the_ramp_leaves_unguided():
    model = tiny_flowar()
    torch.manual_seed(0)
    with torch.no_grad():  # zero-initialised layers would make the class invisible, and guidance a no-op
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))

    def draw(g, schedule):
        trace = []
        model.generate([0, 1], guidance=g, sample_steps=3, guidance_schedule=schedule, trace=trace,
                       generator=torch.Generator().manual_seed(2))
        return [s["latent"] for s in trace]
    ramped, constant = draw(3.0, "linear"), draw(3.0, "constant")
    assert not torch.allclose(ramped[0], constant[0])  # the ramp's first scale is unguided, the constant's is not
    for a, b in zip(draw(1.0, "linear"), draw(1.0, "constant")):  # at guidance 1 there is nothing to ramp
        torch.testing.assert_close(a, b)

# ------------------------------------------------------------------------------- the release, reproduced

@pytest.fixture(scope="module")
def mar():
    return torch.load(FIXTURES / "mar_vae_tiny.pt", weights_only=True)


@pytest.mark.parametrize("variant", ["attn", "plain"])
def test_mar_vae_moments_and_decoder_equal_the_official(mar, variant):
    golden = mar[variant]
    vae = load_mar_vae(golden["state_dict"], **golden["kwargs"])
    assert vae.cfg.encoder_attn == (variant == "attn")  # read from the weights
    with torch.no_grad():
        mean, logvar = vae.encode_moments(golden["x"])
        torch.testing.assert_close(mean, golden["mean"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(logvar, golden["logvar"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(vae.decode_latents(golden["z"]), golden["dec"], atol=1e-5, rtol=1e-4)
    # codes are the mean times FlowAR's 0.2325, and decode undoes the scale
    torch.testing.assert_close(vae.decode(vae.encode(golden["x"])), golden["dec_of_mean"], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="check embed_dim"):
        load_mar_vae(golden["state_dict"], **{**golden["kwargs"], "embed_dim": 8})


@pytest.fixture(scope="module")
def flowar_golden():
    return torch.load(FIXTURES / "flowar_tiny.pt", weights_only=True)


@pytest.mark.parametrize("variant", ["small", "cross"])
def test_flowar_conditions_velocities_loss_and_sampler_equal_the_release(flowar_golden, variant):
    golden = flowar_golden[variant]
    model = load_flowar(golden["state_dict"], **golden["kwargs"])
    with torch.no_grad():
        z = model.condition(golden["latents"], golden["labels"])
        torch.testing.assert_close(z, golden["z"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model.velocity(golden["x_t"], golden["t"], z[:, 21:85]), golden["velocity"],
                                   atol=1e-5, rtol=1e-4)
        torch.manual_seed(5)  # the same draws of t and noise as the release's SILoss
        loss = flow_matching_loss(model.head, golden["gt_tokens"][:, 21:85], z[:, 21:85])
        torch.testing.assert_close(loss, golden["loss_scale3_seed5"].float(), atol=1e-5, rtol=1e-4)
        for key, expected in golden["euler"].items():
            steps, cfg, high = key.split("_")
            out = euler_sample(model.velocity, golden["noise"], golden["zz"], int(steps), float(cfg), float(high))
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4, msg=key)


def test_flowar_generation_equals_the_releases_sample_tokens(flowar_golden):
    """Same global seed, same noise draws: the same latents at 16x16 (the size the release hard-codes)."""
    golden = flowar_golden["sample16"]
    model = load_flowar(golden["state_dict"], **golden["kwargs"])
    torch.manual_seed(int(golden["seed"]))
    latents = model.generate(golden["labels"], guidance=golden["cfg"], sample_steps=int(golden["num_steps"]),
                             guidance_high=golden["guidance"])
    torch.testing.assert_close(latents, golden["tokens"], atol=1e-4, rtol=1e-4)


def test_the_flowar_loader_names_a_wrong_config(flowar_golden):
    golden = flowar_golden["small"]
    with pytest.raises(ValueError, match="check img_size"):
        load_flowar(golden["state_dict"], **{**golden["kwargs"], "encoder_depth": 2})
    with pytest.raises(ValueError, match="unknown FlowAR arguments"):
        load_flowar(golden["state_dict"], **golden["kwargs"], depth=3)
    with pytest.raises(ValueError, match="patch_size=1"):
        load_flowar(golden["state_dict"], **{**golden["kwargs"], "patch_size": 2})
