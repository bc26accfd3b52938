"""Graders for exercise 04 (multi-scale residual quantization). Run `pytest -m ex04` to check your answers."""

import pytest
import torch
from _grading import implementations, load

from minivar.msvq import MultiScaleQuantizer

SCALES = (1, 2, 3, 4, 6, 8)


@pytest.fixture(params=implementations("ex04"))
def ex(request):
    return load("ex04_multiscale", request.param)


def reference():
    torch.manual_seed(0)
    q = MultiScaleQuantizer(32, 4, SCALES, phi_ratio=0.0)  # no Phi, as in the exercise
    q.codebook.weight.data.normal_()
    return q


def test_part1_residual_encode(ex):
    q = reference()
    f = torch.randn(2, 4, 8, 8)
    got = ex.residual_encode(f, q.codebook.weight.detach(), SCALES)
    expected = q.encode_scales(f)
    assert isinstance(got, list) and len(got) == len(SCALES), "Part 1 (residual_encode): return one map per scale"
    for k, (a, b) in enumerate(zip(got, expected)):
        assert tuple(a.shape) == tuple(b.shape), f"Part 1 (residual_encode): scale {k} should be {tuple(b.shape)}"
        assert torch.equal(a.long(), b), (f"Part 1 (residual_encode): scale {k} ({SCALES[k]}x{SCALES[k]}) picks other "
                                          f"codes. Scale 0 is the nearest code of the mean of f; later scales quantize "
                                          f"what is left after subtracting the upsampled earlier codes")


def test_part2_teacher_forcing_input(ex):
    q = reference()
    tokens = q.encode_scales(torch.randn(2, 4, 8, 8))
    got = ex.teacher_forcing_input(tokens, q.codebook.weight.detach(), SCALES)
    expected = q.teacher_forcing_input(tokens)
    assert isinstance(got, torch.Tensor) and got.shape == expected.shape, \
        f"Part 2 (teacher_forcing_input): expected shape {tuple(expected.shape)} = (B, 4+9+16+36+64, C)"
    assert torch.allclose(got, expected, atol=1e-5), ("Part 2 (teacher_forcing_input): values differ. After scale k, "
                                                      "f_hat (all scales <= k upsampled and summed) goes down to scale "
                                                      "k+1's size (mode='area')")
