"""Graders for exercise 05 (next-scale prediction). Run `pytest -m ex05` to check your answers."""

import pytest
import torch
from _grading import exercise, implementations
from _grading import expected as ref
from _probes import ToyVAR

from minivar.scales import block_causal_mask


@pytest.fixture(scope="module", params=implementations("ex05"))
def ex(request):
    yield from exercise("ex05_next_scale", request.param)


def test_part1_block_causal_mask(ex):
    for scales in [(1, 2), (1, 2, 3, 4, 6, 8), (1,), (2, 3), (1, 1, 2)]:
        got, expected = ex.block_causal_mask(scales), block_causal_mask(scales)
        assert isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype == torch.bool, \
            f"Part 1 (block_causal_mask): return a ({len(expected)}, {len(expected)}) bool tensor for scales {scales}"
        wrong = (got != expected).nonzero()
        if len(wrong):
            q, k = int(wrong[0, 0]), int(wrong[0, 1])
            pytest.fail(f"Part 1 (block_causal_mask): for scales {scales}, entry (query {q}, key {k}) should be "
                        f"{bool(expected[q, k])}: a token sees its own whole scale and every coarser one",
                        pytrace=False)


def test_part2_next_scale_loss(ex):
    g = torch.Generator().manual_seed(0)
    for B, scales, V in [(2, (1, 2, 3), 6), (1, (1,), 4), (3, (1, 2, 4), 16), (2, (2, 3), 5)]:
        maps = [torch.randint(0, V, (B, s, s), generator=g) for s in scales]
        L = sum(s * s for s in scales)
        logits = torch.randn(B, L, V, generator=g, requires_grad=True)
        case = f"with B={B}, scales {scales}, V={V}"
        out = ex.next_scale_loss(logits, maps)
        assert isinstance(out, tuple) and len(out) == 2, "Part 2 (next_scale_loss): return (loss, per_scale)"
        loss, per_scale = out
        mean, expected, by_scale = ref("ex05", f"part2 {B} {scales} {V}", "ex05_next_scale_loss", logits, maps)
        assert isinstance(loss, torch.Tensor) and loss.ndim == 0, f"Part 2 (next_scale_loss): {case}, loss is a scalar"
        if not torch.allclose(loss, mean, rtol=1e-5, atol=1e-6):
            hint = " That is the mean of the per-scale means: every token must count the same" if \
                torch.allclose(loss, by_scale, rtol=1e-5) else \
                " Which slice of the L logits belongs to which scale, and in what order is each map read?"
            pytest.fail(f"Part 2 (next_scale_loss): {case}, the loss is {float(loss):.4f}, expected "
                        f"{float(mean):.4f}.{hint}", pytrace=False)
        assert isinstance(per_scale, torch.Tensor) and per_scale.shape == (len(scales),), \
            f"Part 2 (next_scale_loss): {case}, per_scale must be a tensor ({len(scales)},)"
        bad = ((per_scale - expected).abs() > 1e-4).nonzero().flatten()
        assert not len(bad), (f"Part 2 (next_scale_loss): {case}, the loss of scale {int(bad[0])} "
                              f"({scales[int(bad[0])]}x{scales[int(bad[0])]}) is {float(per_scale[bad[0]]):.4f}, "
                              f"expected {float(expected[bad[0]]):.4f}")
        assert not per_scale.requires_grad, f"Part 2 (next_scale_loss): {case}, detach per_scale (it is for plots)"


def test_part3_generate_scales_loop(ex):
    for B, scales, V, C, seed in [(3, (1, 2, 3), 7, 4, 0), (1, (1,), 3, 1, 1), (4, (1, 2, 4, 6), 12, 9, 2)]:
        labels = torch.arange(B) % C
        toy = ex.probe("ToyVAR", scales, V, C, labels, seed)
        try:
            got = ex.generate_scales(toy, labels, scales, toy.method("next_input"), temperature=0)
        except NotImplementedError:
            pytest.fail("Part 3 (generate_scales): not done yet", pytrace=False)
        case = f"with {B} labels, scales {scales}, greedy"
        assert isinstance(got, (list, tuple)) and len(got) == len(scales), \
            f"Part 3 (generate_scales): {case}, return a list of {len(scales)} token maps"
        reference = ref("ex05", f"part3 {B} {scales} {V} {C} {seed}", "ex05_greedy", scales, V, C, labels, seed)
        for k, (m, e) in enumerate(zip(got, reference)):
            assert isinstance(m, torch.Tensor) and tuple(m.shape) == tuple(e.shape) and m.dtype == torch.long, \
                f"Part 3 (generate_scales): {case}, map {k} must be a long tensor {tuple(e.shape)}, got " \
                f"{getattr(m, 'dtype', type(m).__name__)} {tuple(getattr(m, 'shape', ()))}"
            wrong = (m != e).nonzero()
            assert not len(wrong), (f"Part 3 (generate_scales): {case}, scale {k} ({scales[k]}x{scales[k]}): the "
                                    f"token at (b, row, col) = {tuple(wrong[0].tolist())} is "
                                    f"{int(m[tuple(wrong[0])])}, expected {int(e[tuple(wrong[0])])}; a scale's "
                                    f"logits are its tokens in raster order")
        assert toy.state["calls"] == len(scales), \
            f"Part 3 (generate_scales): {case}, step ran {toy.state['calls']} times"


def test_part4_generate_scales_draws(ex):
    B, scales, V = 4000, (1, 2), 6
    labels = torch.zeros(B, dtype=torch.long)
    for temperature in (1.0, 0.6):
        toy = ex.probe("ToyVAR", scales, V, 1, labels, 3)
        try:
            maps = ex.generate_scales(toy, labels, scales, toy.method("next_input"), temperature,
                                      generator=torch.Generator().manual_seed(0))
        except NotImplementedError:
            pytest.fail("Part 4 (generate_scales): not done yet", pytrace=False)
        first = ToyVAR(scales, V, 1, labels[:1], 3)(0, None)[0, 0]
        probs = (first / temperature).softmax(-1)
        freq = torch.bincount(maps[0].flatten(), minlength=V).float() / B
        tol = 4 * (probs * (1 - probs) / B).sqrt() + 2e-3
        off = ((freq - probs).abs() > tol).nonzero().flatten()
        assert not len(off), (f"Part 4 (generate_scales): at temperature {temperature}, token {int(off[0])} was drawn "
                              f"{freq[off[0]]:.2%} of the time at the first scale, expected {probs[off[0]]:.2%}")
        second = maps[1].flatten(1)  # 4 tokens of scale 2: drawn each on its own, not one token copied 4 times
        same = (second == second[:, :1]).all(1).float().mean().item()
        assert same < 0.9, f"Part 4 (generate_scales): at temperature {temperature}, {same:.0%} of the 2x2 maps " \
                           f"repeat one token: draw every token of a scale from its own distribution"
    labels = torch.tensor([0, 0, 0])
    a, b = (ex.generate_scales(ex.probe("ToyVAR", scales, V, 1, labels, 4), labels, scales,
                               ex.probe("ToyVAR", scales, V, 1, labels, 4).method("next_input"), 1.0,
                               generator=torch.Generator().manual_seed(5)) for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b)), \
        "Part 4 (generate_scales): the same generator seed drew other tokens: draw with torch.multinomial(..., " \
        "generator=generator)"


def test_part5_attention_pairs(ex):
    for scales in [(1, 2, 3, 4, 6, 8), (1,), (2, 3), (1, 1, 2), (1, 2, 4, 8, 16)]:
        got = ex.attention_pairs(scales)
        assert isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(v, int) for v in got), \
            f"Part 5 (attention_pairs): return two ints (block_causal, causal), got {got!r}"
        block, causal = ref("ex05", f"part5 {scales}", "ex05_attention_pairs", scales)
        L = sum(s * s for s in scales)
        assert got[1] == causal, (f"Part 5 (attention_pairs): for scales {scales} (L = {L}), a causal mask allows "
                                  f"{causal} pairs, not {got[1]}: does a token see itself?")
        assert got[0] == block, (f"Part 5 (attention_pairs): for scales {scales} (L = {L}), the block-causal mask "
                                 f"allows {got[0]} pairs? Count a scale's queries times the keys they see: their "
                                 f"own whole scale and every coarser one")
