"""Graders for exercise 04 (multi-scale residual quantization). Run `pytest -m ex04` to check your answers."""

import pytest
import torch
from _grading import exercise, implementations
from _grading import expected as ref

from minivar.msvq import MultiScaleQuantizer

SCALES = (1, 2, 3, 4, 6, 8)


@pytest.fixture(scope="module", params=implementations("ex04"))
def ex(request):
    yield from exercise("ex04_multiscale", request.param)


# (scales, codes, code dim, batch): VAR's emoji schedule, two short ones, one not starting at 1x1, one code dim
CASES = [(SCALES, 32, 4, 2), ((1, 2, 4), 16, 3, 1), ((2, 4), 8, 2, 3), ((1, 3, 5), 64, 1, 2)]


def reference(scales, codes, dim, seed=0):
    q = MultiScaleQuantizer(codes, dim, scales, phi_ratio=0.0)  # no Phi, as in the exercise
    q.codebook.weight.data.normal_(generator=torch.Generator().manual_seed(seed))
    return q


def test_part1_residual_encode(ex):
    for i, (scales, codes, dim, B) in enumerate(CASES):
        q = reference(scales, codes, dim, i)
        f = torch.randn(B, dim, scales[-1], scales[-1], generator=torch.Generator().manual_seed(i))
        case = f"scales {scales}, {codes} codes of dim {dim}, batch {B}"
        got = ex.residual_encode(f, q.codebook.weight.detach(), scales)
        expected = q.encode_scales(f)
        assert isinstance(got, list) and len(got) == len(scales), \
            f"Part 1 (residual_encode): {case}: return one map per scale ({len(scales)})"
        for k, (a, b) in enumerate(zip(got, expected)):
            assert tuple(a.shape) == tuple(b.shape), \
                f"Part 1 (residual_encode): {case}: scale {k} should be {tuple(b.shape)}, got {tuple(a.shape)}"
            wrong = (a.long() != b).nonzero()
            assert not len(wrong), (f"Part 1 (residual_encode): {case}: scale {k} ({scales[k]}x{scales[k]}) picks "
                                    f"other codes, first at (b, row, col) = {tuple(wrong[0].tolist())}. Scale 0 "
                                    f"quantizes f averaged down to its size; each later scale what is left after "
                                    f"subtracting the upsampled earlier codes")


def test_part2_teacher_forcing_input(ex):
    for i, (scales, codes, dim, B) in enumerate(CASES):
        q = reference(scales, codes, dim, i)
        tokens = q.encode_scales(torch.randn(B, dim, scales[-1], scales[-1],
                                             generator=torch.Generator().manual_seed(10 + i)))
        case = f"scales {scales}, {codes} codes of dim {dim}, batch {B}"
        got = ex.teacher_forcing_input(tokens, q.codebook.weight.detach(), scales)
        expected = q.teacher_forcing_input(tokens)
        sizes = " + ".join(str(s * s) for s in scales[1:])
        assert isinstance(got, torch.Tensor) and got.shape == expected.shape, \
            f"Part 2 (teacher_forcing_input): {case}: expected shape {tuple(expected.shape)} = (B, {sizes}, C)"
        starts = [0]
        for s in scales[1:]:
            starts.append(starts[-1] + s * s)
        for k in range(len(scales) - 1):
            part = slice(starts[k], starts[k + 1])
            assert torch.allclose(got[:, part], expected[:, part], atol=1e-5), \
                (f"Part 2 (teacher_forcing_input): {case}: the input for scale {k + 1} ({scales[k + 1]}x"
                 f"{scales[k + 1]}) differs. After scale {k}, f_hat (scales 0..{k} upsampled and summed) goes down to "
                 f"scale {k + 1}'s size (mode='area')")


def test_part3_first_scale(ex):
    g = torch.Generator().manual_seed(3)
    for B, C, h, K in [(2, 4, 8, 32), (1, 3, 5, 7), (3, 1, 1, 4), (2, 6, 4, 64)]:
        f = torch.randn(B, C, h, h, generator=g) + torch.randn(B, C, 1, 1, generator=g)  # each map its own mean
        codebook = torch.randn(K, C, generator=g) * 1.5
        case = f"f of shape {(B, C, h, h)}, {K} codes"
        out = ex.first_scale(f, codebook)
        assert isinstance(out, tuple) and len(out) == 2, "Part 3 (first_scale): return (token, residual)"
        token, residual = out
        want_token, want_residual = ref("ex04", f"part3 {B} {C} {h} {K}", "ex04_first_scale", f, codebook)
        assert isinstance(token, torch.Tensor) and tuple(token.shape) == (B,), \
            f"Part 3 (first_scale): {case}, the token is one index per image: a long tensor ({B},)"
        wrong = (token.long() != want_token).nonzero().flatten()
        assert not len(wrong), (f"Part 3 (first_scale): {case}, image {int(wrong[0])} gets code "
                                f"{int(token[wrong[0]])}, expected {int(want_token[wrong[0]])}. What single vector "
                                f"does an area average of the whole map give, and which code is nearest to it?")
        assert isinstance(residual, torch.Tensor) and residual.shape == f.shape, \
            f"Part 3 (first_scale): {case}, the residual has f's shape {tuple(f.shape)}"
        assert torch.allclose(residual, want_residual, atol=1e-4), \
            f"Part 3 (first_scale): {case}, the residual is wrong: f minus what the 1x1 token adds back at every " \
            f"position once upsampled"
