"""Graders for exercise 06 (flow matching and FlowAR). Run `pytest -m ex06` to check your answers."""

import pytest
import torch
from _grading import exercise, implementations
from _grading import expected as ref
from _probes import LinearField

from minivar import flow_matching, flowar


@pytest.fixture(scope="module", params=implementations("ex06"))
def ex(request):
    yield from exercise("ex06_flow_matching", request.param)


def test_part1_flow_loss(ex):
    for seed, (B, N, C, D) in enumerate([(3, 4, 2, 5), (1, 1, 3, 2), (5, 16, 4, 8)]):
        g = torch.Generator().manual_seed(seed)
        head, theirs = LinearField(C, D, seed), ex.probe("LinearField", C, D, seed)  # twins: ours, the student's
        x, z = torch.randn(B, N, C, generator=g), torch.randn(B, N, D, generator=g)
        noise = torch.randn(B, N, C, generator=g)
        for t in (torch.rand(B, generator=g), torch.zeros(B), torch.ones(B)):
            got = ex.flow_loss(theirs, x, z, t, noise)
            assert isinstance(got, torch.Tensor) and got.shape == (B,), \
                f"Part 1 (flow_loss): return one loss per sample, shape ({B},); got {getattr(got, 'shape', got)}"
            expected = flow_matching.flow_matching_loss(head, x, z, t, noise)
            bad = ~torch.isclose(got, expected, rtol=1e-5, atol=1e-5)  # (NaN counts as wrong)
            if bad.any():
                i = int(bad.nonzero()[0])
                hint = ("the loss is NaN or infinite: nothing should divide by t" if not torch.isfinite(got[i]) else
                        "at t = 0 the point is the data itself" if t[i] == 0 else
                        "at t = 1 the point is the noise" if t[i] == 1 else
                        "x_t = (1 - t) x + t * noise, and the target velocity is noise - x")
                raise AssertionError(f"Part 1 (flow_loss): sample {i} (t = {float(t[i]):.2f}) has loss "
                                     f"{float(got[i]):.4f}, expected {float(expected[i]):.4f}: {hint}")


def test_part2_guided_euler_step(ex):
    for seed, (B, N, C, D) in enumerate([(2, 4, 2, 3), (1, 9, 3, 2), (4, 1, 4, 4)]):
        g = torch.Generator().manual_seed(10 + seed)
        head, theirs = LinearField(C, D, seed), ex.probe("LinearField", C, D, seed)
        x, z = torch.randn(2 * B, N, C, generator=g), torch.randn(2 * B, N, D, generator=g)
        for t, t_next, scale in ((1.0, 0.75, 1.0), (0.5, 0.3, 3.0), (0.2, 0.0, 0.0)):
            got = ex.guided_euler_step(theirs, x, t, t_next, z, scale)
            assert isinstance(got, torch.Tensor) and got.shape == x.shape, \
                f"Part 2 (guided_euler_step): return x at t_next, shape {tuple(x.shape)}"
            v = flow_matching.guided_velocity(head, x.double(), t, z, scale, guided=True, dtype=torch.float32)
            expected = (x.double() + (t_next - t) * v).float()
            bad = ~torch.isclose(got.float(), expected, atol=1e-5, rtol=1e-4)  # (NaN counts as wrong)
            if bad.any():
                row = int(bad.flatten(1).any(1).nonzero()[0])
                half = "conditional" if row < B else "unconditional"
                raise AssertionError(f"Part 2 (guided_euler_step): row {row} (the {half} half) is wrong at scale "
                                     f"{scale}, t {t} -> {t_next}. Both halves must move by uncond + scale * "
                                     f"(cond - uncond), where both velocities are taken at the conditional states")


def test_part3_next_scale_input(ex):
    for seed, (B, C, s, full, s_next) in enumerate([(2, 4, 2, 8, 4), (1, 3, 1, 8, 2), (3, 2, 4, 16, 8),
                                                    (2, 4, 3, 8, 6)]):
        y = torch.randn(B, C, s, s, generator=torch.Generator().manual_seed(seed))
        got = ex.next_scale_input(y, full, s_next)
        assert isinstance(got, torch.Tensor) and got.shape == (B, C, s_next, s_next), \
            f"Part 3 (next_scale_input): expected shape {(B, C, s_next, s_next)}, got {getattr(got, 'shape', got)}"
        expected = flowar.next_scale_input(y, full, s_next)
        assert torch.allclose(got, expected, atol=1e-5), \
            (f"Part 3 (next_scale_input): values differ for a {s}x{s} scale going to {s_next}x{s_next} (full "
             f"{full}): upsample with mode='bicubic' to the full size first, then mode='area' down")


def test_part4_heun_step(ex):
    for seed, (B, N, C, D) in enumerate([(2, 4, 2, 3), (1, 9, 3, 2), (3, 1, 4, 4)]):
        g = torch.Generator().manual_seed(20 + seed)
        x, z = torch.randn(B, N, C, generator=g), torch.randn(B, N, D, generator=g)
        for t, t_next in ((1.0, 0.8), (0.5, 0.1), (0.3, 0.0)):
            got = ex.heun_step(ex.probe("LinearField", C, D, seed), x, t, t_next, z)
            assert isinstance(got, torch.Tensor) and got.shape == x.shape, \
                f"Part 4 (heun_step): return x at t_next, shape {tuple(x.shape)}"
            want = ref("ex06", f"part4 {seed} {t} {t_next}", "ex06_heun_step", C, D, seed, x, t, t_next, z)
            assert torch.allclose(got.float(), want, atol=1e-5, rtol=1e-4), \
                (f"Part 4 (heun_step): from t = {t} to {t_next} the step lands elsewhere (largest gap "
                 f"{float((got.float() - want).abs().max()):.4f}). Heun averages the velocity at the start with the "
                 f"one at the Euler guess's end (taken at t_next), then steps from x again")
