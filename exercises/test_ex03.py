"""Graders for exercise 03 (raster-order generation). Run `pytest -m ex03` to check your answers."""

import pytest
import torch
from _grading import exercise, implementations
from _grading import expected as ref
from _probes import CachedToy

from minivar import sampling


@pytest.fixture(scope="module", params=implementations("ex03"))
def ex(request):
    yield from exercise("ex03_raster_ar", request.param)


def test_part1_teacher_forcing_loss(ex):
    g = torch.Generator().manual_seed(0)
    for B, N, V in [(2, 4, 5), (1, 1, 3), (3, 16, 32), (4, 9, 2)]:
        logits = torch.randn(B, N + 1, V, generator=g)
        tokens = torch.randint(0, V, (B, N), generator=g)
        case = f"with B={B}, N={N} tokens, V={V}"
        loss = ex.teacher_forcing_loss(logits, tokens)
        assert isinstance(loss, torch.Tensor) and loss.ndim == 0, \
            f"Part 1 (teacher_forcing_loss): {case}, return a scalar tensor (the mean over the B * N predictions)"
        expected, shifted = ref("ex03", f"part1 {B} {N} {V}", "ex03_teacher_forcing", logits, tokens)
        if not torch.allclose(loss, expected, rtol=1e-5, atol=1e-6):
            hint = " logits[:, i + 1] has already read t_i: it cannot be what predicts it" \
                if N > 0 and torch.allclose(loss, shifted, rtol=1e-5) else \
                " (the mean cross-entropy of each token under the logits that had not yet seen it)"
            pytest.fail(f"Part 1 (teacher_forcing_loss): {case}, the loss is {float(loss):.4f}, expected "
                        f"{float(expected):.4f}.{hint}", pytrace=False)
        grad = ex.gradients("teacher_forcing_loss", (logits, tokens))[0]
        assert grad is not None and grad[:, -1].abs().max() == 0, \
            f"Part 1 (teacher_forcing_loss): {case}, the last position's logits got a gradient; it predicts nothing"


def test_part2_top_k_top_p_filter(ex):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 40, generator=g) * 2
    logits[3] = 0.0  # a row of ties
    before = logits.clone()
    for k, p in [(5, 1.0), (0, 0.6), (10, 0.8), (0, 1.0), (1, 0.5), (40, 0.3), (3, 0.0001)]:
        got = ex.top_k_top_p_filter(logits, k, p)
        assert torch.equal(logits, before), "Part 2 (top_k_top_p_filter): do not modify the input logits in place"
        kept, expected = torch.isfinite(got), torch.isfinite(sampling.filter_logits(logits, k, p))
        bad = (kept != expected).any(1).nonzero().flatten()
        row = int(bad[0]) if len(bad) else 0
        assert not len(bad), (f"Part 2 (top_k_top_p_filter): with top_k={k}, top_p={p}, row {row} keeps "
                              f"{int(kept[row].sum())} tokens, expected {int(expected[row].sum())}"
                              + (" (row 3 is all ties: keep them all for top-k)" if row == 3 else ""))
        assert torch.equal(got[kept], logits[kept]), \
            f"Part 2 (top_k_top_p_filter): with top_k={k}, top_p={p}, the kept logits changed; keep them as they are"


def test_part3_sample_with_cache_loop(ex):
    for B, V, C, n, seed in [(3, 7, 4, 5, 0), (1, 3, 1, 1, 1), (4, 16, 9, 12, 2)]:
        labels = torch.arange(B) % C
        model = ex.probe("CachedToy", V, C, seed)
        try:
            got = ex.sample_with_cache(model, labels, n, temperature=0)
        except NotImplementedError:
            pytest.fail("Part 3 (sample_with_cache): not done yet", pytrace=False)
        case = f"with {B} labels, {n} tokens, V={V}, greedy"
        assert isinstance(got, torch.Tensor) and tuple(got.shape) == (B, n) and got.dtype == torch.long, \
            f"Part 3 (sample_with_cache): {case}, expected a long tensor {(B, n)}, got " \
            f"{getattr(got, 'dtype', type(got).__name__)} {tuple(getattr(got, 'shape', ()))}"
        expected = ref("ex03", f"part3 {B} {V} {C} {n} {seed}", "ex03_greedy", V, C, seed, labels, n)
        wrong = (got != expected).nonzero()
        assert len(wrong) == 0, (f"Part 3 (sample_with_cache): {case}, token {int(wrong[0][1])} of row "
                                 f"{int(wrong[0][0])} is {int(got[tuple(wrong[0])])}, expected "
                                 f"{int(expected[tuple(wrong[0])])} (the argmax of the last position's logits)")
        fed = sum(length for _, length in model.state["calls"])
        assert fed in (n, n + 1), f"Part 3 (sample_with_cache): {case}, the model read {fed} positions; n + 1 " \
                                  f"inputs at most (the class, then each token once)"


def test_part4_sample_with_cache_draws(ex):
    V, C, B = 8, 2, 6000
    labels = torch.zeros(B, dtype=torch.long)
    first = CachedToy(V, C, 3)(labels[:1, None], 0)[0, -1]  # the logits of the first token
    for temperature, top_k in [(1.0, 0), (0.5, 0), (1.0, 3), (2.0, 0)]:
        try:
            got = ex.sample_with_cache(ex.probe("CachedToy", V, C, 3), labels, 1, temperature, top_k,
                                       generator=torch.Generator().manual_seed(0))
        except NotImplementedError:
            pytest.fail("Part 4 (sample_with_cache): not done yet", pytrace=False)
        probs = sampling.filter_logits(first[None] / temperature, top_k).softmax(-1)[0]
        freq = torch.bincount(got[:, 0], minlength=V).float() / B
        tol = 4 * (probs * (1 - probs) / B).sqrt() + 2e-3
        off = ((freq - probs).abs() > tol).nonzero().flatten()
        assert not len(off), (f"Part 4 (sample_with_cache): at temperature {temperature}, top_k {top_k}, token "
                              f"{int(off[0])} was drawn {freq[off[0]]:.2%} of the time, expected "
                              f"{probs[off[0]]:.2%} (softmax(logits / temperature) over the top_k most likely)")
    labels = torch.arange(64) % C  # 384 tokens: two draws from other random numbers cannot agree by chance
    a = ex.sample_with_cache(ex.probe("CachedToy", V, C, 4), labels, 6, 1.0, 0,
                             generator=torch.Generator().manual_seed(5))
    b = ex.sample_with_cache(ex.probe("CachedToy", V, C, 4), labels, 6, 1.0, 0,
                             generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b), "Part 4 (sample_with_cache): the same generator seed drew other tokens: draw with " \
                              "torch.multinomial(..., generator=generator)"
    draws = {tuple(ex.sample_with_cache(ex.probe("CachedToy", V, C, 4), labels, 6, 1.0, 0,
                                        generator=torch.Generator().manual_seed(s)).flatten().tolist())
             for s in range(6)}
    assert len(draws) > 1, "Part 4 (sample_with_cache): six seeds drew the same tokens: at temperature 1 the tokens " \
                           "are drawn at random, not taken greedily"


def test_part5_sequence_log_prob(ex):
    g = torch.Generator().manual_seed(6)
    for B, V, C, N, seed in [(3, 7, 4, 5, 0), (1, 3, 1, 1, 1), (4, 16, 9, 12, 2), (2, 5, 2, 3, 3)]:
        labels = torch.randint(0, C, (B,), generator=g)
        tokens = torch.randint(0, V, (B, N), generator=g)
        model = ex.probe("CachedToy", V, C, seed, part="Part 5 (sequence_log_prob)")
        try:
            got = ex.sequence_log_prob(model, labels, tokens)
        except NotImplementedError:
            pytest.fail("Part 5 (sequence_log_prob): not done yet", pytrace=False)
        case = f"with {B} rows of {N} tokens, V={V}"
        assert isinstance(got, torch.Tensor) and tuple(got.shape) == (B,) and got.is_floating_point(), \
            f"Part 5 (sequence_log_prob): {case}, return a float tensor ({B},), one log-probability per row, got " \
            f"{getattr(got, 'dtype', type(got).__name__)} {tuple(getattr(got, 'shape', ()))}"
        expected = ref("ex03", f"part5 {B} {V} {C} {N} {seed}", "ex03_log_prob", V, C, seed, labels, tokens)
        bad = (~torch.isclose(got.float(), expected, rtol=1e-4, atol=1e-4)).nonzero().flatten()
        if len(bad):
            r = int(bad[0])
            pytest.fail(f"Part 5 (sequence_log_prob): {case}, row {r} scores {float(got[r]):.4f}, expected "
                        f"{float(expected[r]):.4f}: the sum of the log-softmax of each token under the logits of "
                        f"the position just before it (the class before t_0)", pytrace=False)
        fed = sum(length for _, length in model.state["calls"])
        assert fed in (N, N + 1), f"Part 5 (sequence_log_prob): {case}, the model read {fed} positions; the class " \
                                  f"and the tokens, each once (the last token need not be read)"
