"""RAR: the order schedule, target-aware positions, causal structure in any order, cached generation, and it learns."""

import math

import pytest
import torch
import torch.nn.functional as F

from minivar.rar import RAR, RARConfig, random_order_ratio, sample_orders, slot_positions
from minivar.sampling import cosine_ramp
from tests.helpers import fit


def tiny(**kw):
    base = dict(codebook_size=16, grid=4, num_classes=4, dim=32, n_layer=2, n_head=4, dropout=0.0, attn_dropout=0.0,
                class_dropout=0.0)
    torch.manual_seed(0)
    model = RAR(RARConfig(**{**base, **kw}))
    with torch.no_grad():  # adaLN-Zero starts every block as the identity; give the blocks something to do
        for p in model.parameters():
            if (p == 0).all():
                p.normal_(std=0.1)
    return model.eval()


@pytest.mark.parametrize("start, end, at, expected", [
    (0.5, 0.75, [0.0, 0.25, 0.5, 0.6, 0.7, 0.75, 1.0], [1.0, 1.0, 1.0, 0.6, 0.2, 0.0, 0.0]),
    (0.0, 1.0, [0.0, 0.1, 0.5, 0.6, 0.8, 0.99, 1.0], [1.0, 0.9, 0.5, 0.4, 0.2, 0.01, 0.0]),
    (1.0, 1.0, [0.0, 0.5, 0.99, 1.0], [1.0, 1.0, 1.0, 0.0]),  # random orders throughout the run
    (0.0, 0.0, [0.0, 0.5, 1.0], [0.0, 0.0, 0.0]),  # raster throughout
])
def test_random_order_ratio_follows_the_release_schedule(start, end, at, expected):
    assert [random_order_ratio(p, start, end) for p in at] == pytest.approx(expected)


def test_sample_orders_are_permutations_raster_with_probability_one_minus_r():
    g = torch.Generator().manual_seed(0)
    orders = sample_orders(4000, 16, 0.3, generator=g)
    assert torch.equal(orders.sort(1).values, torch.arange(16).expand(4000, 16))
    random_rows = (orders != torch.arange(16)).any(1).float().mean().item()
    assert random_rows == pytest.approx(0.3, abs=0.03)  # a random permutation of 16 is raster with prob 1/16!
    assert torch.equal(sample_orders(5, 16, 0.0), torch.arange(16).expand(5, 16))
    # at r = 1 every position is equally likely at every step of the order
    first = sample_orders(4000, 16, 1.0, generator=g)[:, 0]
    assert torch.bincount(first, minlength=16).float().div(4000).sub(1 / 16).abs().max() < 0.02


def test_slot_positions_give_each_slot_its_own_position_and_the_next_tokens():
    orders = torch.tensor([[2, 0, 3, 1]])
    positions, targets = slot_positions(orders)
    assert positions.tolist() == [[0, 1, 4, 2, 5, 3]]  # cls, class, then 2 + the grid position of each token
    assert targets.tolist() == [[-1, 2, 0, 3, 1, -1]]  # the class slot predicts the first, the last predicts none


def test_logit_k_sees_the_class_and_the_tokens_before_it_in_the_order():
    model = tiny()
    tokens, labels = torch.randint(0, 16, (3, 16)), torch.tensor([0, 1, 4])  # 4: the null class
    orders = sample_orders(3, 16, 1.0, generator=torch.Generator().manual_seed(1))
    emb = []

    def keep(module, args, out):  # the image tokens' rows, (3, 16 - 1, dim), fed in order
        if out.ndim == 3 and out.shape[1] == 15:
            emb.append(out)

    hook = model.embeddings.register_forward_hook(keep)
    logits = model(tokens, labels, orders)
    hook.remove()
    assert logits.shape == (3, 16, 16)
    x = emb[0]
    seen = torch.stack([torch.autograd.grad(logits[:, k].square().sum(), x, retain_graph=True)[0].abs().sum((0, 2))
                        for k in range(16)]) > 0
    assert torch.equal(seen, torch.ones(16, 15).tril(-1).bool())  # logit k reads fed tokens j < k only


def test_target_aware_positions_tell_the_model_which_token_comes_next():
    """Two orders that share their first k positions and differ at the k-th: with target-aware positions logit k
    differs (the model knows where the next token sits), without them it cannot."""
    tokens, labels = torch.randint(0, 16, (1, 16)), torch.tensor([2])
    a = torch.arange(16)[None]
    b = a.clone()
    b[0, 5], b[0, 9] = 9, 5
    for aware in (True, False):
        model = tiny(target_aware=aware)
        la, lb = model(tokens, labels, a), model(tokens, labels, b)
        assert torch.allclose(la[:, :5], lb[:, :5])
        assert torch.allclose(la[:, 5], lb[:, 5]) is not aware


@pytest.mark.parametrize("guidance, power, random_order", [(1.0, 0.0, False), (3.0, 0.0, False),
                                                           (2.0, 2.75, True)])
def test_cached_generation_equals_recomputing_everything(guidance, power, random_order):
    model = tiny()
    labels = torch.tensor([0, 1, 2, 3, 1])
    orders = torch.randperm(16, generator=torch.Generator().manual_seed(3)) if random_order else None
    kw = dict(guidance=guidance, guidance_power=power, orders=orders)
    cached = model.generate(labels, generator=torch.Generator().manual_seed(7), **kw)
    full = model.generate(labels, generator=torch.Generator().manual_seed(7), use_cache=False, **kw)
    assert cached.shape == (5, 4, 4)
    assert torch.equal(cached, full)


def test_greedy_generation_is_the_argmax_of_the_teacher_forced_logits():
    model = tiny()
    labels = torch.tensor([0, 3])
    orders = torch.randperm(16, generator=torch.Generator().manual_seed(4))
    maps = model.generate(labels, guidance=1.0, temperature=0, orders=orders).flatten(1)
    logits = model(maps, labels, orders.expand(2, 16))
    assert torch.equal(logits.argmax(-1), maps.gather(1, orders.expand(2, 16)))


def test_guided_sampling_mixes_the_conditional_and_null_logits_with_the_schedule():
    """First token, guidance 3, power 1: step 0 of the cosine schedule is 1, so the first token is drawn from the
    conditional logits alone; a greedy run must pick their argmax."""
    model = tiny()
    labels = torch.tensor([1, 2])
    maps = model.generate(labels, guidance=3.0, guidance_power=1.0, temperature=0).flatten(1)
    empty = torch.zeros(2, 16, dtype=torch.long)
    cond = model(empty, labels)[:, 0]
    assert torch.equal(maps[:, 0], cond.argmax(-1))
    # token 8 of 16 at power 1: s = 1 + 2 * (1 - cos(pi / 2)) / 2 = 2
    assert cosine_ramp(3.0, 8, 16, 1.0) == pytest.approx(2.0)
    assert cosine_ramp(3.0, 0, 16, 0.0) == 3.0 and cosine_ramp(3.0, 15, 16, 0.0) == 3.0
    s = [cosine_ramp(16.0, t, 256, 2.75) for t in range(256)]
    assert s[0] == 1.0 and all(a <= b for a, b in zip(s, s[1:])) and s[-1] < 16.0


def test_completion_keeps_the_given_tokens_and_samples_the_rest():
    model = tiny()
    given = torch.full((2, 16), -1)
    given[:, [0, 5, 10, 15]] = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    orders = torch.randperm(16, generator=torch.Generator().manual_seed(5))
    kw = dict(guidance=2.0, given=given, orders=orders)
    maps = model.generate(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0), **kw).flatten(1)
    assert torch.equal(maps[:, [0, 5, 10, 15]], given[:, [0, 5, 10, 15]])
    again = model.generate(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0), use_cache=False, **kw)
    assert torch.equal(maps, again.flatten(1))
    with pytest.raises(ValueError, match="same number"):
        bad = given.clone()
        bad[1, 1] = 0
        model.generate(torch.tensor([0, 1]), given=bad)


def test_training_loss_falls_in_random_and_raster_orders():
    model = tiny(class_dropout=0.1).train()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 16, (8, 4, 4), generator=g)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    losses = fit(model, (tokens, labels), 150)  # progress 0: random orders every step
    assert losses[0] > math.log(16) - 0.5 and sum(losses[-10:]) / 10 < 0.5 * losses[0]
    model.eval()
    assert model.loss((tokens, labels))[0].item() < 0.5 * math.log(16)  # raster order, never trained on alone


def test_the_eval_loss_is_raster_and_the_training_loss_follows_the_ratio():
    model = tiny()
    batch = (torch.randint(0, 16, (4, 16)), torch.tensor([0, 1, 2, 3]))
    a, b = model.loss(batch)[0], model.loss(batch)[0]
    assert torch.equal(a, b)  # eval mode: raster order, deterministic
    model.train()
    assert model.loss(batch, progress=0.0)[1]["random_ratio"].item() == 1.0
    assert model.loss(batch, progress=0.9)[1]["random_ratio"].item() == 0.0


def test_bad_inputs_are_named():
    model = tiny()
    tokens, labels = torch.randint(0, 16, (2, 16)), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="permutation"):
        model(tokens, labels, torch.zeros(2, 16, dtype=torch.long))
    with pytest.raises(ValueError, match=r"LongTensor \(B, 16\)"):
        model(tokens[:, :8], labels)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        model(tokens + 16, labels)
    with pytest.raises(ValueError, match="one permutation of 0..15 per row"):
        model.generate(labels, orders=torch.arange(15))
    with pytest.raises(ValueError, match=r"given holds tokens in \[0, 16\)"):
        model.generate(labels, given=torch.full((2, 16), -2))
    with pytest.raises(ValueError, match="guidance_power must be"):
        model.generate(labels, guidance_power=-1.0)
    model.train()
    with pytest.raises(ValueError, match="top_p"):
        model.generate(labels, top_p=2.0)
    assert model.training  # a refused call leaves the model as it was
    with pytest.raises(ValueError, match="anneal"):
        RARConfig(anneal_start=0.8, anneal_end=0.5)
    with pytest.raises(ValueError, match="guidance_power"):
        RARConfig(guidance_power=-1)


def test_logits_match_a_plain_cross_entropy_over_the_ordered_targets():
    model = tiny()
    tokens, labels = torch.randint(0, 16, (2, 16)), torch.tensor([1, 2])
    orders = sample_orders(2, 16, 1.0, generator=torch.Generator().manual_seed(2))
    logits = model(tokens, labels, orders)
    manual = F.cross_entropy(logits.flatten(0, 1), tokens.gather(1, orders).flatten())
    assert torch.isfinite(manual) and manual.item() > 0


def test_guidance_zero_samples_the_unconditional_model():
    model = tiny()
    labels = torch.tensor([0, 1, 2])
    uncond = model.generate(labels, guidance=0.0, temperature=0).flatten(1)
    logits = model(uncond, torch.full((3,), model.null_class))  # the null class's own greedy choices, every step
    assert torch.equal(logits.argmax(-1), uncond)


def test_the_release_weight_decay_exclusions():
    names = {"embeddings.weight", "pos", "target_pos", "step_embed", "head_ada.linear.weight"}
    assert tiny().no_weight_decay() == names
    assert "target_pos" not in dict(tiny(target_aware=False).named_parameters())  # no unused parameter (DDP)
