"""Graders for exercise 05 (next-scale prediction). Run `pytest -m ex05` to check your answers."""

import pytest
import torch
from _grading import implementations, load

from minivar import var


@pytest.fixture(params=implementations("ex05"))
def ex(request):
    return load("ex05_next_scale", request.param)


def test_part1_block_causal_mask(ex):
    for scales in [(1, 2), (1, 2, 3, 4, 6, 8)]:
        got, expected = ex.block_causal_mask(scales), var.block_causal_mask(scales)
        assert isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype == torch.bool, \
            f"Part 1 (block_causal_mask): return a ({len(expected)}, {len(expected)}) bool tensor for scales {scales}"
        wrong = (got != expected).nonzero()
        if len(wrong):
            q, k = int(wrong[0, 0]), int(wrong[0, 1])
            raise AssertionError(f"Part 1 (block_causal_mask): entry (query {q}, key {k}) should be "
                                 f"{bool(expected[q, k])} for scales {scales}: a token sees its own whole scale and "
                                 f"every coarser one")


def test_part2_guidance_ramp(ex):
    cond, uncond = torch.randn(2, 4, 10), torch.randn(2, 4, 10)
    for k in range(6):
        got = ex.guidance_ramp(cond, uncond, 3.0, k, 6)
        s = 1 + 2.0 * k / 5
        assert isinstance(got, torch.Tensor), "Part 2 (guidance_ramp): return a tensor"
        torch.testing.assert_close(got, uncond + s * (cond - uncond),
                                   msg=f"Part 2 (guidance_ramp): at scale {k} of 6 with guidance 3, the scale s "
                                       f"should be {s:.2f} (1 at the first scale, 3 at the last)")
