"""Graders for exercise 01 (a vector-quantization layer). Run `pytest -m ex01` to check your answers."""

import pytest
import torch
from _grading import exercise, implementations
from _grading import expected as ref

from minivar.vq import VectorQuantizer


@pytest.fixture(scope="module", params=implementations("ex01"))
def ex(request):
    yield from exercise("ex01_vector_quantization", request.param)


# (B, C, H, W, K): square and not, one channel, two codes at a single position, more codes than positions
SHAPES = [(2, 4, 3, 3, 16), (1, 3, 2, 5, 7), (3, 1, 4, 2, 5), (2, 6, 1, 1, 2), (1, 8, 4, 4, 64)]


def reference(z, codebook, beta):
    """minivar's VQ layer with this codebook: (z_q, indices, loss)."""
    vq = VectorQuantizer(codebook.shape[0], codebook.shape[1], beta=beta)
    vq.codebook.weight.data.copy_(codebook)
    z_q, idx, loss, _ = vq.eval()(z)
    return z_q.detach(), idx, loss.detach()


def test_part1_nearest_code(ex):
    g = torch.Generator().manual_seed(0)
    for n, k, c in [(50, 16, 4), (7, 1, 3), (1, 9, 2), (200, 64, 8), (30, 5, 1)]:
        z, codebook = torch.randn(n, c, generator=g), torch.randn(k, c, generator=g)
        got = ex.nearest_code(z, codebook)
        assert isinstance(got, torch.Tensor) and got.shape == (n,) and got.dtype == torch.long, \
            f"Part 1 (nearest_code): expected a long tensor ({n},), one index per row, got " \
            f"{getattr(got, 'dtype', type(got).__name__)} {tuple(getattr(got, 'shape', ()))}"
        expected = (z[:, None] - codebook[None]).pow(2).sum(-1)
        wrong = (expected.gather(1, got[:, None]).squeeze(1) > expected.min(1).values + 1e-5).nonzero().flatten()
        assert len(wrong) == 0, (f"Part 1 (nearest_code): with {n} vectors and {k} codes of dimension {c}, row "
                                 f"{int(wrong[0])} picks code {int(got[wrong[0]])} but code "
                                 f"{int(expected[wrong[0]].argmin())} is nearer. The smallest squared distance wins")
    z = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    codebook = torch.tensor([[100.0, 0.0], [9.0, 0.0], [0.5, 0.5]])
    got = ex.nearest_code(z, codebook).tolist()
    assert got == [2, 1], f"Part 1 (nearest_code): z = (0, 0) and (10, 0) with codes (100, 0), (9, 0), (0.5, 0.5) " \
                          f"should pick [2, 1], got {got}. Is it the argmin (not argmax) of the distance?"


def test_part2_vq_forward_values(ex):
    g = torch.Generator().manual_seed(1)
    for B, C, H, W, K in SHAPES:
        z, codebook = torch.randn(B, C, H, W, generator=g), torch.randn(K, C, generator=g)
        beta = float(torch.rand(1, generator=g)) + 0.1
        out = ex.vq_forward(z, codebook, beta)
        assert isinstance(out, tuple) and len(out) == 3, \
            "Part 2 (vq_forward): return the tuple (z_q, indices, loss)"
        z_q, idx, loss = out
        ref_q, ref_idx, ref_loss = reference(z, codebook, beta)
        shape = f"z of shape {(B, C, H, W)}, {K} codes"
        assert tuple(idx.shape) == (B, H, W) and idx.dtype == torch.long, \
            f"Part 2 (vq_forward): with {shape}, indices must be a long tensor {(B, H, W)}, got {idx.dtype} " \
            f"{tuple(idx.shape)}"
        wrong = (idx != ref_idx).nonzero()
        assert len(wrong) == 0, (f"Part 2 (vq_forward): with {shape}, the index at (b, h, w) = "
                                 f"{tuple(wrong[0].tolist())} is {int(idx[tuple(wrong[0])])}, expected "
                                 f"{int(ref_idx[tuple(wrong[0])])}. Each position's C channels form one vector: "
                                 f"check how (B, C, H, W) becomes rows")
        assert tuple(z_q.shape) == (B, C, H, W), \
            f"Part 2 (vq_forward): with {shape}, z_q must have z's shape {(B, C, H, W)}, got {tuple(z_q.shape)}"
        assert torch.allclose(z_q, ref_q, atol=1e-5), \
            f"Part 2 (vq_forward): with {shape}, z_q must hold at each position the code its index names"
        assert loss.ndim == 0 and torch.allclose(loss, ref_loss, rtol=1e-4, atol=1e-6), \
            f"Part 2 (vq_forward): with {shape} and beta = {beta:.3f}, the loss is {float(loss):.5f}, expected " \
            f"{float(ref_loss):.5f} = (1 + beta) * the mean squared distance to the chosen codes"


def test_part3_vq_forward_gradients(ex):
    g = torch.Generator().manual_seed(2)
    for B, C, H, W, K in SHAPES:
        z0, cb0 = torch.randn(B, C, H, W, generator=g), torch.randn(K, C, generator=g)
        upstream = torch.randn(B, C, H, W, generator=g)
        shape = f"z of shape {(B, C, H, W)}, {K} codes"
        grads = {}
        try:  # each output's gradient on its own: z_q's against an upstream gradient, the loss's as it is
            grads["z_q"] = ex.gradients("vq_forward", (z0, cb0, 0.5), wrt=(0, 1), output=(0,), upstream=upstream)
            grads["loss"] = ex.gradients("vq_forward", (z0, cb0, 0.5), wrt=(0, 1), output=(2,))
        except NotImplementedError:
            pytest.fail("Part 3 (vq_forward): not done yet (parts 2 and 3 grade the same function)")
        ref = {}
        for name in ("z_q", "loss"):
            z, vq = z0.clone().requires_grad_(), VectorQuantizer(K, C, beta=0.5).eval()
            vq.codebook.weight.data.copy_(cb0)
            z_q, _, loss, _ = vq(z)
            (z_q * upstream).sum().backward() if name == "z_q" else loss.backward()
            ref[name] = (z.grad, vq.codebook.weight.grad)
        gz, gc = grads["z_q"]
        assert gz is not None and torch.allclose(gz, upstream, atol=1e-6), \
            f"Part 3 (vq_forward): with {shape}, the gradient reaching z through z_q must equal the gradient at z_q " \
            f"(straight-through: the identity)"
        assert gc is None or gc.abs().max() == 0, \
            f"Part 3 (vq_forward): with {shape}, the gradient through z_q reached the codebook; z_q's value is the " \
            f"code, but its gradient belongs to z only"
        gz, gc = grads["loss"]
        rz, rc = ref["loss"]
        assert gz is not None and torch.allclose(gz, rz, atol=1e-6), \
            f"Part 3 (vq_forward): with {shape}, the loss's gradient at z is wrong: only the beta term may reach the " \
            f"encoder (stop the gradient to z in the codebook term)"
        assert gc is not None and torch.allclose(gc, rc, atol=1e-6), \
            f"Part 3 (vq_forward): with {shape}, the loss's gradient at the codebook is wrong: only the codebook " \
            f"term may move the codes, and only the codes that were chosen"


def test_part4_vq_loss_gradient(ex):
    for beta, n in [(0.25, 64), (1.0, 3), (0.1, 1000), (2.0, 1)]:
        got = ex.vq_loss_gradient(beta, n)
        assert isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(v, (int, float)) for v in got), \
            f"Part 4 (vq_loss_gradient): return the two numbers (a, b) as floats, got {got!r}"
        a, b = ref("ex01", f"part4 {beta} {n}", "ex01_vq_loss_gradient", beta, n)
        assert abs(got[0] - a) <= 1e-9 * max(1, abs(a)) and abs(got[1] - b) <= 1e-9 * max(1, abs(b)), \
            (f"Part 4 (vq_loss_gradient): with beta = {beta} and n = {n}, (a, b) = ({got[0]:.6g}, {got[1]:.6g}) is "
             f"wrong. Which term reaches z, which reaches e? What does the mean's 1/n do, and the square's 2?")
