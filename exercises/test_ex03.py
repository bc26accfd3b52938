"""Graders for exercise 03 (raster-order generation). Run `pytest -m ex03` to check your answers."""

import pytest
import torch
from _grading import implementations, load

from minivar import sampling, transformer


@pytest.fixture(params=implementations("ex03"))
def ex(request):
    return load("ex03_raster_ar", request.param)


def test_part1_causal_mask(ex):
    got = ex.causal_mask(5)
    assert isinstance(got, torch.Tensor) and got.shape == (5, 5) and got.dtype == torch.bool, \
        "Part 1 (causal_mask): return a (n, n) bool tensor"
    assert torch.equal(got, transformer.causal_mask(5)), \
        f"Part 1 (causal_mask): row i must be True for columns 0..i and False after; got\n{got.int()}"


def test_part2_rope_2d(ex):
    got = ex.rope_2d(3, 4, 16)
    expected = transformer.rope_2d(3, 4, 16)
    assert isinstance(got, torch.Tensor) and got.shape == expected.shape, \
        f"Part 2 (rope_2d): expected shape {tuple(expected.shape)} = (rows*cols, head_dim/2, 2), got " \
        f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got)}"
    rows_ok = torch.allclose(got[:, :4], expected[:, :4], atol=1e-6)
    cols_ok = torch.allclose(got[:, 4:], expected[:, 4:], atol=1e-6)
    assert rows_ok, "Part 2 (rope_2d): the first head_dim/4 pairs should turn with the row r (position r*cols+c)"
    assert cols_ok, "Part 2 (rope_2d): the last head_dim/4 pairs should turn with the column c"


def test_part3_top_k_top_p_filter(ex):
    torch.manual_seed(0)
    logits = torch.randn(6, 40) * 2
    before = logits.clone()
    for k, p in [(5, 1.0), (0, 0.6), (10, 0.8), (0, 1.0), (1, 0.5)]:
        got = ex.top_k_top_p_filter(logits, k, p)
        assert torch.equal(logits, before), "Part 3 (top_k_top_p_filter): do not modify the input logits in place"
        kept, expected = torch.isfinite(got), torch.isfinite(sampling.filter_logits(logits, k, p))
        assert torch.equal(kept, expected), (f"Part 3 (top_k_top_p_filter): with top_k={k}, top_p={p} row 0 keeps "
                                             f"{kept[0].sum().item()} tokens, expected {expected[0].sum().item()}")
        assert torch.equal(got[kept], logits[kept]), "Part 3 (top_k_top_p_filter): kept logits must be unchanged"


def test_part4_guidance_mix(ex):
    cond, uncond = torch.randn(4, 10), torch.randn(4, 10)
    for scale in (0.0, 1.0, 2.5):
        got = ex.guidance_mix(cond, uncond, scale)
        assert isinstance(got, torch.Tensor), "Part 4 (guidance_mix): return a tensor"
        torch.testing.assert_close(got, sampling.guidance_mix(cond, uncond, scale),
                                   msg=f"Part 4 (guidance_mix): at scale {scale} expected "
                                       f"uncond + scale * (cond - uncond)")
