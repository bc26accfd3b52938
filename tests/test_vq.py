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


# ----------------------------------------------------------------------------- options (notebook 02)

def test_l2_norm_argmin_is_the_cosine_argmax():
    torch.manual_seed(1)
    q = VectorQuantizer(32, 6, l2_norm=True)
    q.codebook.weight.data.normal_()
    z = torch.randn(3, 6, 4, 4) * 5  # the scale of z must not matter
    _, idx, _, _ = q(z)
    z_flat = z.permute(0, 2, 3, 1).reshape(-1, 6)
    cosine = F.normalize(z_flat, dim=1) @ F.normalize(q.codebook.weight, dim=1).t()
    assert torch.equal(idx.flatten(), cosine.argmax(1))
    d = torch.cdist(F.normalize(z_flat, dim=1), F.normalize(q.codebook.weight, dim=1))
    assert torch.equal(idx.flatten(), d.argmin(1))
    # the decoder receives unit-norm codes, and lookup() agrees with the forward pass
    z_q, idx, _, _ = q(z)
    torch.testing.assert_close(z_q.norm(dim=1), torch.ones(3, 4, 4))
    torch.testing.assert_close(q.lookup(idx), z_q)


def test_ema_update_equals_its_formula():
    torch.manual_seed(2)
    q = VectorQuantizer(4, 2, ema=True, ema_decay=0.9, ema_eps=1e-5).train()
    assert not q.codebook.weight.requires_grad
    q.codebook.weight.data = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]])
    q.ema_sum.copy_(q.codebook.weight.data)
    q.ema_count.fill_(1.0)
    z_flat = torch.tensor([[1.0, 1.0], [2.0, 0.0], [9.0, 1.0]])  # codes 0, 0, 1; codes 2 and 3 unused
    _, idx, loss, stats = q(z_flat.t().reshape(1, 2, 3, 1))
    assert idx.flatten().tolist() == [0, 0, 1] and "codebook_loss" not in stats
    count = 0.9 * torch.ones(4) + 0.1 * torch.tensor([2.0, 1.0, 0.0, 0.0])
    sums = 0.9 * torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]]) \
        + 0.1 * torch.tensor([[3.0, 1.0], [9.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    n = count.sum()
    smoothed = (count + 1e-5) / (n + 4 * 1e-5) * n
    torch.testing.assert_close(q.ema_count, count)
    torch.testing.assert_close(q.codebook.weight.data, sums / smoothed[:, None])


def test_a_dead_code_is_restarted_and_then_used():
    torch.manual_seed(3)
    q = VectorQuantizer(8, 2, restart_after=2).train()
    q.codebook.weight.data = torch.randn(8, 2)
    q.codebook.weight.data[7] = torch.tensor([100.0, 100.0])  # far from all data: never chosen
    z = torch.randn(1, 2, 4, 4)
    _, idx1, _, s1 = q(z)
    assert 7 not in idx1 and s1["restarted"] == 0
    _, idx2, _, s2 = q(z)  # second step without use: code 7 (and any other unused code) is restarted
    assert s2["restarted"] >= 1
    z_flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
    new7 = q.codebook.weight.data[7]
    assert (z_flat == new7).all(1).any(), "the dead code must jump onto a current encoder output"
    _, idx3, _, _ = q(z)
    assert 7 in idx3, "the restarted code must now win the vector it was placed on"


@pytest.mark.parametrize("ema,l2", [(False, False), (True, False), (False, True)])
def test_data_init_copies_distinct_encoder_outputs_once_and_survives_a_resume(ema, l2):
    torch.manual_seed(5)
    q = VectorQuantizer(16, 3, ema=ema, l2_norm=l2, init="data").train()
    z = torch.randn(2, 3, 4, 4) * 5  # 32 vectors, far from the tiny uniform codes
    _, idx, _, _ = q(z)
    z_flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    if l2:
        z_flat = torch.nn.functional.normalize(z_flat, dim=1)
    if not ema:  # (with ema the first update has already averaged the codes toward their vectors)
        codes = q.codebook.weight.data
        assert all((z_flat == c).all(1).any() for c in codes), "every code must start on an encoder output"
        assert len({tuple(c.tolist()) for c in codes}) == 16, "32 vectors for 16 codes: the picks must be distinct"
    assert idx.unique().numel() == 16, "started on the data, every code wins the vector it was copied from"
    after = q.codebook.weight.data.clone()
    q2 = VectorQuantizer(16, 3, ema=ema, l2_norm=l2, init="data").train()
    q2.load_state_dict(q.state_dict())  # a resumed run must not initialise again
    q2(torch.randn(2, 3, 4, 4) * 50)
    if not ema:
        torch.testing.assert_close(q2.codebook.weight.data, after)
    q.eval()(z)
    with pytest.raises(ValueError, match="uniform"):
        VectorQuantizer(16, 3, init="kmeans")


def test_rotation_trick_value_and_gradient_match_the_closed_form():
    from minivar.vq import rotate_to
    torch.manual_seed(4)
    z = torch.randn(5, 3, requires_grad=True)
    e = torch.randn(5, 3)
    out = rotate_to(z, e)
    torch.testing.assert_close(out, e)  # forward value is the code
    g = torch.randn(5, 3)
    (out * g).sum().backward()
    for i in range(5):
        zi, ei = z[i].detach(), e[i]
        u, q = zi / zi.norm(), ei / ei.norm()
        r = (u + q) / (u + q).norm()
        R = torch.eye(3) - 2 * torch.outer(r, r) + 2 * torch.outer(q, u)
        torch.testing.assert_close(R @ u, q)  # R really rotates z's direction onto e's
        torch.testing.assert_close(R.t() @ R, torch.eye(3), atol=1e-5, rtol=0)
        torch.testing.assert_close(z.grad[i], ei.norm() / zi.norm() * R.t() @ g[i])


def test_rotation_trick_in_the_quantizer_keeps_the_codebook_loss():
    torch.manual_seed(5)
    q = VectorQuantizer(16, 4, rotation_trick=True)
    q.codebook.weight.data.normal_()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    z_q, idx, loss, _ = q(z)
    torch.testing.assert_close(z_q, q.lookup(idx))
    (z_q.sum() + loss).backward()
    assert z.grad.abs().sum() > 0 and q.codebook.weight.grad.abs().sum() > 0


def test_entropy_loss_hand_computation_and_extremes():
    from minivar.vq import entropy_loss
    logits = torch.tensor([[0.0, 0.01], [0.02, 0.0]])  # / 0.01 -> [[0, 1], [2, 0]]
    p = torch.tensor([[0.0, 1.0], [2.0, 0.0]]).softmax(-1)
    sample = -(p * p.log()).sum(-1).mean()
    avg = p.mean(0)
    torch.testing.assert_close(entropy_loss(logits), sample + (avg * torch.log(avg + 1e-5)).sum())
    confident_and_diverse = torch.eye(8) * 100.0
    assert entropy_loss(confident_and_diverse, 1.0) == pytest.approx(-torch.log(torch.tensor(8.0)).item(), abs=1e-3)
    collapsed = torch.zeros(8, 8)
    collapsed[:, 0] = 100.0
    assert entropy_loss(collapsed, 1.0) > entropy_loss(confident_and_diverse, 1.0) + 2


def test_entropy_term_is_added_to_the_loss():
    torch.manual_seed(6)
    a, b = VectorQuantizer(16, 4), VectorQuantizer(16, 4, entropy_weight=0.5)
    b.load_state_dict(a.state_dict())
    z = torch.randn(2, 4, 3, 3)
    _, _, la, _ = a(z)
    _, _, lb, sb = b(z)
    torch.testing.assert_close(lb, la + 0.5 * sb["entropy_loss"])


def test_window_usage_ignores_empty_slots():
    q = VectorQuantizer(10, 2, usage_window=6).train()
    q.codebook.weight.data = torch.arange(20.0).reshape(10, 2)
    z = q.codebook.weight.data[[3, 5]].t().reshape(1, 2, 2, 1)  # exactly codes 3 and 5
    _, idx, _, stats = q(z)
    assert idx.flatten().tolist() == [3, 5]
    assert stats["window_usage"] == pytest.approx(0.2)  # 2 of 10, code 0 not counted (LlamaGen's quirk)
    for _ in range(3):
        q(q.codebook.weight.data[[7, 8]].t().reshape(1, 2, 2, 1))
    assert q(q.codebook.weight.data[[7, 8]].t().reshape(1, 2, 2, 1))[3]["window_usage"] == pytest.approx(0.2)
