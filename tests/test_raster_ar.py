"""The raster-order GPT: causal structure, cached == uncached generation, guidance, and it learns."""

import math

import pytest
import torch
import torch.nn.functional as F

from minivar.raster_ar import RasterAR, RasterARConfig
from minivar.sampling import guidance_mix, sample
from tests.helpers import fit


def tiny(**kw):
    base = dict(codebook_size=16, grid=4, num_classes=4, dim=32, n_layer=2, n_head=4, multiple_of=16)
    torch.manual_seed(0)
    model = RasterAR(RasterARConfig(**{**base, **kw}))
    torch.nn.init.normal_(model.output.weight, std=0.3)  # a zero head makes every distribution uniform
    return model.eval()


def test_logit_shapes_and_the_zero_head_starts_at_ln_vocab():
    torch.manual_seed(0)
    model = RasterAR(RasterARConfig(codebook_size=16, grid=4, num_classes=4, dim=32, n_layer=2, n_head=4))
    tokens, labels = torch.randint(0, 16, (3, 16)), torch.tensor([0, 1, 2])
    assert model(tokens[:, :-1], labels).shape == (3, 16, 16)
    assert model.loss((tokens, labels))[0].item() == pytest.approx(math.log(16), abs=1e-6)


def test_output_i_depends_only_on_the_class_and_tokens_before_i():
    model = tiny()
    tokens, labels = torch.randint(0, 16, (2, 15)), torch.tensor([1, 3])
    emb = {}

    def keep(module, args, out):  # the token embeddings, so we can differentiate with respect to them
        emb["x"] = out

    hook = model.tok_embeddings.register_forward_hook(keep)
    out = model(tokens, labels)  # (2, 16, vocab)
    hook.remove()
    grads = torch.stack([torch.autograd.grad(out[:, i].square().sum(), emb["x"], retain_graph=True)[0].abs().sum((0, 2))
                         for i in range(16)])  # (outputs, inputs)
    seen = grads > 0
    assert torch.equal(seen, torch.ones(16, 15).tril(-1).bool())  # output i sees input tokens j < i only


@pytest.mark.parametrize("guidance, top_k, top_p", [(1.0, 0, 1.0), (3.0, 0, 1.0), (2.0, 5, 0.9)])
def test_cached_generation_equals_recomputing_everything(guidance, top_k, top_p):
    model = tiny()
    labels = torch.tensor([0, 1, 2, 3, 1])
    kw = dict(guidance=guidance, top_k=top_k, top_p=top_p)
    cached = model.generate(labels, generator=torch.Generator().manual_seed(7), **kw)
    full = model.generate(labels, generator=torch.Generator().manual_seed(7), use_cache=False, **kw)
    assert cached.shape == (5, 4, 4)
    assert torch.equal(cached, full)


def test_guidance_at_scale_one_samples_like_the_conditional_model():
    """Run the guided path by hand at s = 1 (batch doubled with the null class, logits mixed): the same
    tokens as plain conditional generation under the same seed."""
    model = tiny()
    labels = torch.tensor([0, 2, 3])
    plain = model.generate(labels, guidance=1.0, generator=torch.Generator().manual_seed(3)).flatten(1)
    g, seq = torch.Generator().manual_seed(3), torch.zeros(3, 0, dtype=torch.long)
    both = torch.cat([labels, torch.full_like(labels, model.null_class)])
    with torch.no_grad():
        for _ in range(16):
            logits = model(torch.cat([seq, seq]), both)[:, -1]
            seq = torch.cat([seq, sample(guidance_mix(logits[:3], logits[3:], 1.0), generator=g)[:, None]], 1)
    assert torch.equal(seq, plain)


def test_label_dropout_uses_the_null_class_at_the_configured_rate():
    model = tiny(class_dropout=0.3).train()
    torch.manual_seed(0)
    table = model.class_embedding.weight
    dropped = (model.class_embedding(torch.zeros(20000, dtype=torch.long)) == table[model.null_class]).all(-1)
    assert dropped.float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert torch.equal(model.eval().class_embedding(torch.zeros(5, dtype=torch.long)), table[[0] * 5])


def test_bad_inputs_name_the_fix():
    model = tiny()
    with pytest.raises(ValueError, match="flatten"):
        model(torch.zeros(2, 4, 4, dtype=torch.long), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        model(torch.full((2, 3), 16), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        model(torch.zeros(2, 3, dtype=torch.long), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="divisible by 4"):
        RasterARConfig(dim=36, n_head=6)


def test_a_tiny_model_memorises_four_token_maps_and_regenerates_them():
    torch.manual_seed(0)
    model = RasterAR(RasterARConfig(codebook_size=16, grid=4, num_classes=4, dim=64, n_layer=2, n_head=4,
                                    multiple_of=16, class_dropout=0.0))
    maps, labels = torch.randint(0, 16, (4, 16)), torch.arange(4)
    losses = fit(model, (maps, labels), 150)
    assert losses[0] == pytest.approx(math.log(16), abs=1e-3) and losses[-1] < 0.05
    assert torch.equal(model.generate(labels, guidance=1.0, temperature=0).flatten(1), maps)
    g = torch.Generator().manual_seed(0)  # sampling at temperature 1 lands on them too: the model is certain
    assert torch.equal(model.generate(labels, guidance=1.0, generator=g).flatten(1), maps)


def test_prefix_completion_keeps_the_given_tokens():
    model = tiny()
    prefix = torch.randint(0, 16, (2, 6))
    out = model.generate(torch.tensor([0, 1]), prefix=prefix, guidance=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.flatten(1)[:, :6], prefix)


def test_cross_entropy_matches_the_logits():
    model = tiny()
    tokens, labels = torch.randint(0, 16, (2, 16)), torch.tensor([0, 1])
    logits = model(tokens[:, :-1], labels)
    torch.testing.assert_close(model.loss((tokens, labels))[0], F.cross_entropy(logits.flatten(0, 1), tokens.flatten()))
