import pytest
import torch
import torch.nn.functional as F

from minivar.vq import VectorQuantizer, usage_stats


@pytest.fixture
def vq():
    torch.manual_seed(0)
    q = VectorQuantizer(codebook_size=16, dim=4, beta=0.25)
    q.codebook.weight.data.normal_()  # spread the codes so the argmin is not trivial
    return q


def test_indices_are_the_brute_force_argmin(vq):
    z = torch.randn(2, 4, 3, 5)
    _, idx, _, _ = vq(z)
    for b in range(2):
        for i in range(3):
            for j in range(5):
                dists = [((z[b, :, i, j] - e) ** 2).sum() for e in vq.codebook.weight]
                assert idx[b, i, j] == int(torch.stack(dists).argmin())


def test_quantized_output_is_the_chosen_code(vq):
    z = torch.randn(2, 4, 3, 3)
    z_q, idx, _, _ = vq(z)
    torch.testing.assert_close(z_q, vq.codebook.weight[idx].permute(0, 3, 1, 2))
    torch.testing.assert_close(vq.lookup(idx), z_q)


def test_straight_through_copies_the_gradient_at_z_q_to_z(vq):
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    z_q, _, _, _ = vq(z)
    upstream = torch.randn_like(z_q)
    (z_q * upstream).sum().backward()  # task loss only: no VQ loss terms
    torch.testing.assert_close(z.grad, upstream)
    assert vq.codebook.weight.grad is None or vq.codebook.weight.grad.abs().sum() == 0


def test_codebook_learns_only_from_codebook_loss_and_encoder_from_commitment(vq):
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    z_q, idx, loss, stats = vq(z)
    e = vq.codebook.weight[idx].permute(0, 3, 1, 2).detach()
    # the codebook gradient is exactly d/d codebook of ||sg[z] - e||^2
    grad_cb = torch.autograd.grad(loss, vq.codebook.weight, retain_graph=True)[0]
    ref_cb = vq.codebook.weight.detach().clone().requires_grad_()
    ref_loss = F.mse_loss(ref_cb[idx].permute(0, 3, 1, 2), z.detach())
    torch.testing.assert_close(grad_cb, torch.autograd.grad(ref_loss, ref_cb)[0])
    # the encoder gradient of the VQ loss is exactly that of beta * ||z - sg[e]||^2
    grad_z = torch.autograd.grad(loss, z)[0]
    torch.testing.assert_close(grad_z, 0.25 * 2 * (z.detach() - e) / z.numel())


def test_loss_values_equal_a_hand_computation(vq):
    z = torch.randn(1, 4, 2, 2)
    _, idx, loss, stats = vq(z)
    e = vq.codebook.weight[idx].permute(0, 3, 1, 2)
    mse = ((z - e) ** 2).sum() / z.numel()
    torch.testing.assert_close(stats["codebook_loss"], mse.detach())
    torch.testing.assert_close(stats["commitment_loss"], 0.25 * mse.detach())
    torch.testing.assert_close(loss, 1.25 * mse)


def test_distances_are_fp32_under_bf16_autocast(vq):
    z = torch.randn(4, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, idx_amp, _, _ = vq(z)
    _, idx, _, _ = vq(z)
    assert torch.equal(idx_amp, idx)


def test_usage_and_perplexity():
    s = usage_stats(torch.tensor([0, 0, 1, 1]), codebook_size=4)
    assert s["usage"] == 0.5
    torch.testing.assert_close(s["perplexity"], torch.tensor(2.0))  # two codes used equally
    s = usage_stats(torch.arange(8), codebook_size=8)
    torch.testing.assert_close(s["perplexity"], torch.tensor(8.0))


def test_bad_inputs_name_the_fix(vq):
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
        vq(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        vq.lookup(torch.tensor([[[16]]]))
    with pytest.raises(TypeError, match="integer"):
        vq.lookup(torch.zeros(1, 2, 2))
