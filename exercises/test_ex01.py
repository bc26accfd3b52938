"""Graders for exercise 01 (vector quantization). Run `pytest -m ex01` to check your answers."""

import pytest
import torch
from _grading import implementations, load

from minivar.vq import VectorQuantizer


@pytest.fixture(params=implementations("ex01"))
def ex(request):
    return load("ex01_vector_quantization", request.param)


@pytest.fixture
def data():
    torch.manual_seed(0)
    return torch.randn(50, 4), torch.randn(16, 4)  # z_flat (N, C), codebook (K, C)


def test_part1_nearest_code(ex, data):
    z, codebook = data
    got = ex.nearest_code(z, codebook)
    assert isinstance(got, torch.Tensor) and got.shape == (50,), \
        f"Part 1 (nearest_code): expected a tensor of shape (50,), one index per row, got {getattr(got, 'shape', got)}"
    ref = VectorQuantizer(16, 4)
    ref.codebook.weight.data.copy_(codebook)
    expected = ref.nearest(z)
    wrong = (got != expected).nonzero().flatten()
    assert len(wrong) == 0, (f"Part 1 (nearest_code): row {int(wrong[0])} should pick code {int(expected[wrong[0]])}, "
                             f"got {int(got[wrong[0]])}. Is it the argmin (not argmax) of the squared distance?")


def test_part2_straight_through(ex):
    z = torch.randn(3, 4, requires_grad=True)
    z_q = torch.randn(3, 4)
    out = ex.straight_through(z, z_q)
    assert torch.allclose(out, z_q), "Part 2 (straight_through): the forward value must equal z_q"
    upstream = torch.randn(3, 4)
    (out * upstream).sum().backward()
    assert z.grad is not None, "Part 2 (straight_through): no gradient reached z; it must pass through unchanged"
    assert torch.allclose(z.grad, upstream), \
        "Part 2 (straight_through): the gradient at z must equal the gradient at the output (identity)"


def test_part3_codebook_loss(ex):
    z = torch.randn(6, 4, requires_grad=True)
    e = torch.randn(6, 4, requires_grad=True)
    loss = ex.codebook_loss(z, e)
    assert loss.ndim == 0, "Part 3 (codebook_loss): return a scalar (the mean)"
    assert torch.allclose(loss, ((z - e) ** 2).mean()), "Part 3 (codebook_loss): expected the mean of (z - e)^2"
    loss.backward()
    assert z.grad is None or z.grad.abs().sum() == 0, \
        "Part 3 (codebook_loss): z received a gradient; the codebook loss must stop the gradient to z (detach it)"
    assert torch.allclose(e.grad, 2 * (e - z).detach() / e.numel()), "Part 3 (codebook_loss): wrong gradient for e"


def test_part4_commitment_loss(ex):
    z = torch.randn(6, 4, requires_grad=True)
    e = torch.randn(6, 4, requires_grad=True)
    loss = ex.commitment_loss(z, e, beta=0.5)
    assert torch.allclose(loss, 0.5 * ((z - e) ** 2).mean()), \
        "Part 4 (commitment_loss): expected beta * mean of (z - e)^2 (did you use beta?)"
    loss.backward()
    assert e.grad is None or e.grad.abs().sum() == 0, \
        "Part 4 (commitment_loss): the codes received a gradient; stop it (detach e)"
    assert torch.allclose(z.grad, 0.5 * 2 * (z - e).detach() / z.numel()), "Part 4 (commitment_loss): wrong gradient"
