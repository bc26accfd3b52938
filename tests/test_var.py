"""The next-scale transformer: block-causal structure, cached generation == teacher forcing, it learns, and it
reproduces the official VAR (logits and sampled tokens) from its weights."""

from pathlib import Path

import pytest
import torch

from minivar.models import build
from minivar.msvq import MultiScaleVQVAE, MultiScaleVQVAEConfig
from minivar.official import load_var, load_var_vqvae
from minivar.scales import block_causal_mask, split_scales
from minivar.var import VAR, VARConfig
from tests.helpers import fit

FIXTURES = Path(__file__).parent / "fixtures"
SCALES = (1, 2, 3, 4)


def tiny_tokenizer(scales=SCALES):
    """A random multi-scale tokenizer (16 codes of dim 4) whose quantizer turns VAR's tokens into its inputs."""
    tok = MultiScaleVQVAE(MultiScaleVQVAEConfig(image_size=4 * scales[-1], ch=8, ch_mult=(1, 2, 2), z_channels=8,
                                                code_dim=4, codebook_size=16, scales=scales))
    tok.quantizer.codebook.weight.data.normal_()
    return tok.eval()


def tiny(**kw):
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    model = build("var", VARConfig(**{**dict(num_classes=3, depth=2, dim=32, n_head=4), **kw}), tok)
    with torch.no_grad():  # wake the gates and the head up, so that every path carries signal
        for block in model.blocks:
            block.ada_lin.linear.weight.normal_(std=0.1)
        model.head.weight.normal_(std=0.5)
    return model.eval(), tok.quantizer


def random_tokens(B, vocab=16):
    return [torch.randint(0, vocab, (B, s, s)) for s in SCALES]


def test_block_causal_mask():
    mask = block_causal_mask((1, 2))
    expected = torch.tensor([[1, 0, 0, 0, 0]] + [[1, 1, 1, 1, 1]] * 4, dtype=torch.bool)
    assert torch.equal(mask, expected)


def test_scale_k_outputs_do_not_depend_on_finer_scales_inputs():
    model, q = tiny()
    x = q.teacher_forcing_input(random_tokens(2)).requires_grad_(True)  # (2, 29, 4): scales 2..4
    logits = model(torch.tensor([0, 1]), x)  # (2, 30, V)
    starts = [0, 1, 5, 14, 30]  # token ranges of the scales in the full sequence
    for k in range(4):
        (g,) = torch.autograd.grad(logits[:, starts[k]:starts[k + 1]].square().sum(), x, retain_graph=True)
        seen = g.abs().sum((0, 2)) > 0  # (29,): input position j holds sequence position j + 1
        own_end = starts[k + 1] - 1
        assert not seen[own_end:].any(), f"scale {k} sees finer scales"
        assert seen[:own_end].all(), f"scale {k} should see its own and coarser inputs"


def with_logits(model, labels, **kw):
    """generate() and the guided logits of every scale, from its trace."""
    trace = []
    maps = model.generate(labels, trace=trace, **kw)
    assert [t["scale"] for t in trace] == list(range(len(maps)))
    return maps, [t["logits"] for t in trace]


def test_cached_generation_logits_equal_the_teacher_forcing_forward():
    model, q = tiny()
    labels = torch.tensor([0, 2, 1])
    maps, logits = with_logits(model, labels, guidance=1.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(labels, q.teacher_forcing_input(maps))
    torch.testing.assert_close(torch.cat(logits, 1), full, atol=1e-5, rtol=1e-5)


def test_a_prefix_fixes_the_coarse_scales_and_the_rest_is_sampled_given_them():
    model, q = tiny()
    labels = torch.tensor([0, 2, 1])
    given = random_tokens(3)[:2]  # scales 1x1 and 2x2
    maps, logits = with_logits(model, labels, guidance=2.0, prefix=given, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(m, g) for m, g in zip(maps, given))
    # the finer scales' logits are those of the teacher-forced forward over the given and sampled scales together
    with torch.no_grad():
        cond = model(labels, q.teacher_forcing_input(maps))
        uncond = model(torch.full_like(labels, model.class_embedding.null_class), q.teacher_forcing_input(maps))
    full = uncond + torch.cat([torch.full((1, s * s, 1), 1.0 + k / 3) for k, s in enumerate(SCALES)], 1) * (
        cond - uncond)  # the ramp from 1 to 2 over four scales
    torch.testing.assert_close(torch.cat(logits, 1), full, atol=1e-4, rtol=1e-4)
    # the whole pyramid given: nothing is sampled, every draw of the generator gives it back
    whole = random_tokens(3)
    assert all(torch.equal(m, g) for m, g in zip(model.generate(labels, prefix=whole), whole))


@pytest.mark.parametrize("prefix, message", [
    ([torch.zeros(3, 2, 2, dtype=torch.long)], r"prefix\[0\] must be a LongTensor of tokens \(3, 1, 1\)"),
    ([torch.zeros(3, 1, 1)], "LongTensor"),
    ([torch.full((3, 1, 1), 16)], r"outside \[0, 16\)"),
    (torch.zeros(3, 1, 1, dtype=torch.long), "list of the first scales"),
    ([torch.zeros(3, s, s, dtype=torch.long) for s in (1, 2, 3, 4, 5)], "at most 4"),
])
def test_a_bad_prefix_names_the_shape_it_needs(prefix, message):
    model, _ = tiny()
    with pytest.raises(ValueError, match=message):
        model.generate(torch.tensor([0, 1, 2]), prefix=prefix)


def test_guidance_ramps_linearly_over_the_scales():
    """VAR's official ramp t_k = cfg * k / (K - 1), (1 + t_k) cond - t_k uncond, is minivar's guidance 1 + cfg."""
    model, q = tiny()
    labels = torch.tensor([0, 1])
    maps, logits = with_logits(model, labels, guidance=4.0, generator=torch.Generator().manual_seed(0))
    null = torch.full_like(labels, 3)
    with torch.no_grad():
        x = q.teacher_forcing_input(maps)
        cond, uncond = model(labels, x), model(null, x)
    start = 0
    for k, s in enumerate(SCALES):
        t = 3.0 * k / 3
        expected = (1 + t) * cond[:, start:start + s * s] - t * uncond[:, start:start + s * s]
        torch.testing.assert_close(logits[k], expected, atol=1e-5, rtol=1e-5)
        start += s * s


def test_constant_guidance_guides_every_scale_with_the_same_scale():
    model, q = tiny()
    labels = torch.tensor([0, 1])
    maps, logits = with_logits(model, labels, guidance=2.5, generator=torch.Generator().manual_seed(0),
                               guidance_schedule="constant")
    with torch.no_grad():
        x = q.teacher_forcing_input(maps)
        cond, uncond = model(labels, x), model(torch.full_like(labels, 3), x)
    torch.testing.assert_close(torch.cat(logits, 1), uncond + 2.5 * (cond - uncond), atol=1e-5, rtol=1e-5)


def test_a_tiny_var_memorises_three_token_pyramids_and_regenerates_them():
    model, q = tiny(class_dropout=0.0, dim=64)
    model.train()
    targets = torch.cat([t.flatten(1) for t in random_tokens(3)], 1)  # (3, 30)
    labels = torch.arange(3)
    assert fit(model, (targets, labels), 200)[-1] < 0.05
    maps = model.generate(labels, guidance=1.0, temperature=0)
    assert torch.equal(torch.cat([m.flatten(1) for m in maps], 1), targets)


def test_scale_weighting_gives_each_scale_an_equal_share_and_smoothing_trains_only():
    import torch.nn.functional as F
    tokens = torch.cat([t.flatten(1) for t in random_tokens(2)], 1)  # (2, 30)
    labels = torch.tensor([0, 1])
    plain, _ = tiny(class_dropout=0.0)  # no dropout of any kind: train mode computes what eval mode does
    weighted, q = tiny(class_dropout=0.0, loss_weighting="scale", label_smoothing=0.1)
    with torch.no_grad():  # the same weights and the same logits; only the losses differ
        logits = plain(labels, q.teacher_forcing_input(split_scales(tokens, SCALES)))
        ce = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none").view(2, -1)
        smooth = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none",
                                 label_smoothing=0.1).view(2, -1)
        per_scale = torch.stack([chunk.mean(1) for chunk in smooth.split([s * s for s in SCALES], 1)], 1)
        assert torch.allclose(plain.loss((tokens, labels))[0], ce.mean())  # eval mode: plain per-token CE
        assert torch.allclose(weighted.loss((tokens, labels))[0], ce.mean())  # eval: comparable across runs
        loss = weighted.train().loss((tokens, labels))[0]
    assert torch.allclose(loss, per_scale.mean(1).mean(), atol=1e-5)  # the 1x1 token weighs as much as 4x4's 16
    with pytest.raises(ValueError, match="loss_weighting must be 'token' or 'scale'"):
        VARConfig(loss_weighting="scales")
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        VARConfig(label_smoothing=1.0)


def test_errors_name_the_fix():
    model, q = tiny()
    with pytest.raises(ValueError, match=r"teacher_forcing_input \(2, 29, 4\)"):
        model(torch.tensor([0, 1]), torch.zeros(2, 30, 4))
    with pytest.raises(ValueError, match=r"\(B, 30\)"):
        split_scales(torch.zeros(2, 31, dtype=torch.long), SCALES)
    bare = VAR(VARConfig(codebook_size=16, scales=SCALES, code_dim=4, num_classes=3, depth=1, dim=32, n_head=4))
    with pytest.raises(RuntimeError, match=r"bind\(tokenizer\)"):
        bare.generate(torch.tensor([0]))
    with pytest.raises(ValueError, match="--set scales=1,2,4 "):
        bare.bind(tiny_tokenizer((1, 2, 4)))
    with pytest.raises(ValueError, match="leaves codebook_size, scales, code_dim unset"):
        VAR(VARConfig(num_classes=3, depth=1, dim=32, n_head=4))
    for labels, message in [(torch.tensor([0.5]), "integers"), (torch.tensor([3]), r"\[0, 3\)"),
                            (torch.tensor([-1]), r"\[0, 3\)"), (torch.tensor(1), "1-D")]:
        with pytest.raises(ValueError, match=message):
            model.generate(labels)


# ------------------------------------------------------------------------------------------ the official VAR

@pytest.fixture(scope="module")
def official():
    vae_golden = torch.load(FIXTURES / "var_vqvae_tiny.pt", weights_only=True)
    ddconfig = vae_golden["ddconfig_effective"]
    vae = load_var_vqvae(vae_golden["state_dict"], ch_mult=tuple(ddconfig["ch_mult"]),
                         num_res_blocks=ddconfig["num_res_blocks"],
                         **{k: v for k, v in vae_golden["kwargs"].items() if k != "test_mode"})
    return torch.load(FIXTURES / "var_tiny.pt", weights_only=True), vae


@pytest.mark.parametrize("variant", ["plain", "shared_aln"])
def test_var_logits_and_loss_equal_the_official_forward(official, variant):
    golden, vae = official
    ref = golden if variant == "plain" else {**golden, **golden["saln"]}
    var = load_var(ref["state_dict"], vae, **ref["kwargs"])
    with torch.no_grad():
        torch.testing.assert_close(var(golden["label_B"], golden["x_BLCv_wo_first_l"]), ref["logits"],
                                   atol=1e-5, rtol=1e-4)
        null = torch.full_like(golden["label_B"], 10)
        torch.testing.assert_close(var(null, golden["x_BLCv_wo_first_l"]), ref["logits_null"], atol=1e-5, rtol=1e-4)
        loss, _ = var.loss((golden["gt_BL"], golden["label_B"]))
    assert loss.item() == pytest.approx(float(ref["loss_trainer_ls0"]), rel=1e-5)
    tokens = split_scales(golden["gt_BL"], var.cfg.scales)  # the tokenizer's teacher-forcing input, too
    torch.testing.assert_close(vae.quantizer.teacher_forcing_input(tokens), golden["x_BLCv_wo_first_l"],
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("run", ["main", "topk_topp", "random_label", "saln"])
def test_var_generation_equals_the_official_sampler(official, run):
    """Same tokens as the official autoregressive_infer_cfg under the same generator seed (one torch.multinomial
    per scale), with VAR's guidance ramp, top-k and top-p; and the same images."""
    golden, vae = official
    ref, ar = (golden["saln"], golden["saln"]["ar"]["main"]) if run == "saln" else (golden, golden["ar"][run])
    var = load_var(ref["state_dict"], vae, **ref["kwargs"])
    kw = ar["call_kwargs"]
    g = torch.Generator().manual_seed(kw["g_seed"])
    if kw["label_B"] is None:  # the official sampler first draws uniform labels from the same generator
        labels = torch.multinomial(torch.full((1, 10), 0.1), kw["B"], replacement=True, generator=g).view(-1)
    else:
        labels = torch.tensor(kw["label_B"])
    maps, logits = with_logits(var, labels, guidance=1 + kw["cfg"], top_k=kw["top_k"], top_p=kw["top_p"] or 1.0,
                               generator=g)  # VAR's cfg c is minivar's guidance 1 + c
    for k, (m, ref_idx) in enumerate(zip(maps, ar["idx"])):
        assert torch.equal(m.flatten(1), ref_idx), f"scale {k}"
        torch.testing.assert_close(logits[k], ar["logits_cfg"][k], atol=1e-4, rtol=1e-4)
    images = (vae.decode_scales(maps) + 1) / 2  # the official sampler returns [0, 1]
    torch.testing.assert_close(images, ar["images"], atol=1e-4, rtol=1e-4)
