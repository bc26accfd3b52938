"""Graders for exercise 02 (a healthy codebook). Run `pytest -m ex02` to check your answers."""

import pytest
import torch
from _grading import implementations, load

from minivar.vq import VectorQuantizer, usage_stats


@pytest.fixture(params=implementations("ex02"))
def ex(request):
    return load("ex02_codebook", request.param)


def test_part1_l2_nearest_code(ex):
    torch.manual_seed(0)
    z, codebook = torch.randn(64, 4) * 3, torch.randn(32, 4)
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
    idx = torch.randint(0, 50, (500,), generator=torch.Generator().manual_seed(1))
    usage, ppl = ex.usage_and_perplexity(idx, 64)
    ref = usage_stats(idx, 64)
    assert ppl == pytest.approx(ref["perplexity"].item(), rel=1e-4), \
        "Part 2 (usage_and_perplexity): perplexity must be exp(-sum p log p) over the codes' frequencies p"


def test_part3_restart_dead_codes(ex):
    torch.manual_seed(2)
    codebook = torch.randn(8, 3)
    before = codebook.clone()
    last_used = torch.tensor([10, 10, 2, 10, 0, 9, 10, 5])
    z_flat = torch.randn(20, 3)
    new, dead = ex.restart_dead_codes(codebook, last_used, step=10, z_flat=z_flat, restart_after=5,
                                      generator=torch.Generator().manual_seed(0))
    assert torch.equal(codebook, before), "Part 3 (restart_dead_codes): do not change the codebook argument in place"
    assert dead.tolist() == [False, False, True, False, True, False, False, True], \
        "Part 3 (restart_dead_codes): dead means step - last_used >= restart_after"
    assert torch.equal(new[~dead], before[~dead]), "Part 3 (restart_dead_codes): live codes must not change"
    for k in dead.nonzero().flatten():
        assert (z_flat == new[k]).all(1).any(), \
            f"Part 3 (restart_dead_codes): dead code {int(k)} must become a row of z_flat"
