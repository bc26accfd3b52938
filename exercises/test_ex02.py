"""Graders for exercise 02 (a healthy codebook). Run `pytest -m ex02` to check your answers."""

import pytest
import torch
from _grading import exercise, implementations
from _grading import expected as ref

from minivar.vq import VectorQuantizer, usage_stats


@pytest.fixture(scope="module", params=implementations("ex02"))
def ex(request):
    yield from exercise("ex02_codebook", request.param)


def test_part1_l2_nearest_code(ex):
    g = torch.Generator().manual_seed(0)
    z, codebook = torch.randn(64, 4, generator=g) * 3, torch.randn(32, 4, generator=g)
    got = ex.l2_nearest_code(z, codebook)
    ref = VectorQuantizer(32, 4, l2_norm=True)
    ref.codebook.weight.data.copy_(codebook)
    expected = ref.nearest(z)
    assert isinstance(got, torch.Tensor) and got.shape == (64,), "Part 1 (l2_nearest_code): return (N,) indices"
    wrong = (got != expected).nonzero().flatten()
    assert len(wrong) == 0, (f"Part 1 (l2_nearest_code): row {int(wrong[0])} should pick code "
                             f"{int(expected[wrong[0]])}, got {int(got[wrong[0]])}. Did you normalise both z and "
                             f"the codes (F.normalize(..., dim=1)) before comparing?")


def test_part2_usage_and_perplexity(ex):
    idx = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    usage, ppl = ex.usage_and_perplexity(idx, 16)
    assert usage == pytest.approx(0.25), f"Part 2 (usage_and_perplexity): 4 of 16 codes used is 0.25, got {usage}"
    assert ppl == pytest.approx(4.0), f"Part 2 (usage_and_perplexity): 4 codes used equally -> perplexity 4, got {ppl}"
    for idx, K in [(torch.tensor([3, 3, 7, 12, 12, 12]), 16), (torch.tensor([[9, 0], [9, 9]]), 10),
                   (torch.randint(0, 50, (500,), generator=torch.Generator().manual_seed(1)) * 3, 200)]:
        usage, _ = ex.usage_and_perplexity(idx, K)
        used = len(set(idx.flatten().tolist()))
        assert usage == pytest.approx(used / K), \
            (f"Part 2 (usage_and_perplexity): indices {idx.flatten().tolist()[:8]}{'...' if idx.numel() > 8 else ''} "
             f"use {used} of {K} codes, usage {used / K:.4f}; got {usage}. Count the codes that occur, not the "
             f"largest index")
    idx = torch.randint(0, 50, (500,), generator=torch.Generator().manual_seed(1))
    usage, ppl = ex.usage_and_perplexity(idx, 64)
    ref = usage_stats(idx, 64)
    assert ppl == pytest.approx(ref["perplexity"].item(), rel=1e-4), \
        "Part 2 (usage_and_perplexity): perplexity must be exp(-sum p log p) over the codes' frequencies p"


def test_part3_restart_dead_codes(ex):
    g = torch.Generator().manual_seed(2)
    # (K, C, N rows of z, restart_after): few dead codes, most dead, more dead codes than rows, none dead
    for K, C, N, after in [(8, 3, 20, 5), (32, 2, 40, 3), (16, 4, 5, 1), (6, 3, 10, 100)]:
        codebook = torch.randn(K, C, generator=g)
        before = codebook.clone()
        last_used = torch.randint(0, 11, (K,), generator=g)
        z_flat = torch.randn(N, C, generator=g)
        case = f"with {K} codes, {N} rows of z, restart_after = {after}"
        new, dead = ex.restart_dead_codes(codebook, last_used, step=10, z_flat=z_flat, restart_after=after,
                                          generator=torch.Generator().manual_seed(0))
        assert torch.equal(codebook, before), \
            f"Part 3 (restart_dead_codes): {case}, the codebook argument changed in place; work on a copy"
        assert isinstance(dead, torch.Tensor) and dead.dtype == torch.bool and dead.shape == (K,), \
            f"Part 3 (restart_dead_codes): {case}, the mask must be a bool tensor ({K},), got " \
            f"{getattr(dead, 'dtype', type(dead).__name__)}"
        expected = (10 - last_used) >= after
        wrong = (dead != expected).nonzero().flatten()
        assert len(wrong) == 0, (f"Part 3 (restart_dead_codes): {case}, code {int(wrong[0])} (last used at step "
                                 f"{int(last_used[wrong[0]])}, now step 10) should be "
                                 f"{'dead' if expected[wrong[0]] else 'alive'}")
        changed = (new[~dead] != before[~dead]).any(1).nonzero().flatten()
        assert len(changed) == 0, f"Part 3 (restart_dead_codes): {case}, a live code changed"
        rows = [int(((z_flat - new[k]).abs().sum(1) < 1e-6).nonzero().flatten()[0])
                if ((z_flat - new[k]).abs().sum(1) < 1e-6).any() else -1 for k in dead.nonzero().flatten()]
        assert -1 not in rows, (f"Part 3 (restart_dead_codes): {case}, dead code "
                                f"{int(dead.nonzero().flatten()[rows.index(-1)])} did not become a row of z_flat")
        if len(rows) <= N:
            assert len(set(rows)) == len(rows), \
                f"Part 3 (restart_dead_codes): {case}, two dead codes got the same row of z_flat ({rows}); give " \
                f"each a different one while there are enough rows"
        again, _ = ex.restart_dead_codes(codebook, last_used, step=10, z_flat=z_flat, restart_after=after,
                                         generator=torch.Generator().manual_seed(0))
        assert torch.equal(again, new), \
            f"Part 3 (restart_dead_codes): {case}, the same generator seed gave other restarts: draw every random " \
            f"number from `generator`"
    codebook, z_flat = torch.randn(4, 2, generator=g), torch.randn(50, 2, generator=g)
    firsts = set()
    for seed in range(30):  # which row the one dead code takes must vary with the seed, over many rows
        new, _ = ex.restart_dead_codes(codebook, torch.tensor([10, 10, 0, 10]), step=10, z_flat=z_flat,
                                       restart_after=5, generator=torch.Generator().manual_seed(seed))
        firsts.add(int((z_flat - new[2]).abs().sum(1).argmin()))
    assert len(firsts) >= 10, \
        f"Part 3 (restart_dead_codes): over 30 seeds a dead code took only {len(firsts)} different rows of 50: the " \
        f"rows must be drawn at random (with `generator`)"


def test_part4_expected_usage(ex):
    for K, n in [(4, 3), (512, 512), (1024, 64), (16, 1), (8, 200), (4096, 20000)]:
        got = ex.expected_usage(K, n)
        assert isinstance(got, (int, float)), f"Part 4 (expected_usage): return a float, got {got!r}"
        want = ref("ex02", f"part4 {K} {n}", "ex02_expected_usage", K, n)
        assert abs(got - want) < 1e-9, \
            (f"Part 4 (expected_usage): with K = {K} codes and n = {n} picks, the expected used fraction is "
             f"{want:.6f}, got {got:.6f}. For one code, what is the chance that all n picks miss it?")
    g = torch.Generator().manual_seed(4)  # and it is what random picks do
    picks = torch.randint(0, 64, (2000, 100), generator=g)
    empirical = sum(len(set(row.tolist())) for row in picks) / (2000 * 64)
    assert abs(ex.expected_usage(64, 100) - empirical) < 0.01, \
        f"Part 4 (expected_usage): 2000 draws of 100 random picks of 64 codes use {empirical:.3f} of them on average"
