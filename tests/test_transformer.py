"""The shared transformer parts against hand computations and their defining invariants."""

import math

import pytest
import torch
import torch.nn.functional as F

from minivar.transformer import (
    AdaLN,
    KVCache,
    LlamaGenAttention,
    LlamaGenBlock,
    RMSNorm,
    SwiGLU,
    apply_rope,
    causal_mask,
    modulate,
    rope_1d,
    rope_2d,
    swiglu_hidden,
)


def test_rmsnorm_by_hand():
    norm = RMSNorm(2, eps=0.0)
    norm.weight.data = torch.tensor([1.0, 2.0])
    out = norm(torch.tensor([[3.0, 4.0]]))
    rms = math.sqrt((9 + 16) / 2)
    torch.testing.assert_close(out, torch.tensor([[3 / rms, 2 * 4 / rms]]))


def test_rmsnorm_computes_in_fp32_and_returns_the_input_dtype():
    x = torch.randn(4, 64).bfloat16() * 1000
    out = RMSNorm(64)(x)
    assert out.dtype == torch.float32  # bf16 input times the fp32 weight promotes, as in LlamaGen
    torch.testing.assert_close(out, (x.float() / x.float().pow(2).mean(-1, keepdim=True).sqrt()).bfloat16().float())


def test_swiglu_hidden_size_rule_gives_llamagen_widths():
    assert swiglu_hidden(768, 256) == 2048  # GPT-B
    assert swiglu_hidden(1024, 256) == 2816  # GPT-L
    assert swiglu_hidden(64, 32) == 192  # int(2 * 256 / 3) = 170 -> 192


def test_swiglu_by_hand():
    torch.manual_seed(0)
    ffn = SwiGLU(8, 16)
    x = torch.randn(3, 8)
    a, b = x @ ffn.w1.weight.T, x @ ffn.w3.weight.T
    torch.testing.assert_close(ffn(x), (a * torch.sigmoid(a) * b) @ ffn.w2.weight.T)


def test_rope_1d_rotates_each_pair_by_position_times_frequency():
    rope = rope_1d(5, head_dim=4, base=100.0)  # frequencies 1 and 1/10
    x = torch.tensor([1.0, 0.0, 1.0, 0.0]).expand(1, 5, 1, 4)
    out = apply_rope(x, rope)[0, :, 0]  # (5, 4)
    for pos in range(5):
        expected = [math.cos(pos), math.sin(pos), math.cos(pos / 10), math.sin(pos / 10)]
        torch.testing.assert_close(out[pos], torch.tensor(expected))


def test_rope_2d_first_half_of_pairs_follows_the_row_second_half_the_column():
    rows, cols, hd = 3, 5, 16
    rope = rope_2d(rows, cols, hd, prefix=1)
    angles = torch.atan2(rope[1:, :, 1], rope[1:, :, 0]).view(rows, cols, hd // 2)  # skip the class row
    freqs = 1 / 10000 ** (torch.arange(0, hd // 2, 2).float() / (hd // 2))  # a head of half the size

    def wrapped(a):  # angles as atan2 reports them, in (-pi, pi]
        return torch.remainder(a + math.pi, 2 * math.pi) - math.pi

    for r in range(rows):
        for c in range(cols):
            torch.testing.assert_close(angles[r, c, :hd // 4], wrapped(r * freqs))
            torch.testing.assert_close(angles[r, c, hd // 4:], wrapped(c * freqs))


def test_rope_prefix_rows():
    identity = rope_2d(2, 2, 8, prefix=1, prefix_rope="identity")[0]
    assert torch.equal(identity[:, 0], torch.ones(4)) and torch.equal(identity[:, 1], torch.zeros(4))
    assert rope_2d(2, 2, 8, prefix=1, prefix_rope="zeros")[0].abs().sum() == 0  # LlamaGen's choice
    with pytest.raises(ValueError, match="prefix_rope"):
        rope_2d(2, 2, 8, prefix=1, prefix_rope="none")


def test_rope_2d_makes_scores_depend_only_on_the_row_and_column_offset():
    torch.manual_seed(0)
    rows = cols = 6
    hd = 16
    rope = rope_2d(rows, cols, hd)
    q, k = torch.randn(hd), torch.randn(hd)

    def score(p, s):  # query at grid cell p, key at grid cell s
        qr = apply_rope(q.view(1, 1, 1, hd), rope[p[0] * cols + p[1]][None])
        kr = apply_rope(k.view(1, 1, 1, hd), rope[s[0] * cols + s[1]][None])
        return (qr * kr).sum()

    for offset in [(0, 0), (1, 2), (-2, 1), (3, -3)]:
        scores = [score((r, c), (r + offset[0], c + offset[1])) for r in range(rows) for c in range(cols)
                  if 0 <= r + offset[0] < rows and 0 <= c + offset[1] < cols]
        torch.testing.assert_close(torch.stack(scores), scores[0].expand(len(scores)), atol=1e-5, rtol=1e-5)
    # ... and it does depend on the offset (a row offset is not the same as a column offset)
    assert not torch.isclose(score((0, 0), (1, 0)), score((0, 0), (0, 1)))


def test_causal_mask_with_past_tokens():
    assert torch.equal(causal_mask(2, 3), torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))


@pytest.mark.parametrize("capacity", [0, 9, 12])  # growing by cat; static, exactly full; static with room left
@pytest.mark.parametrize("n_kv_head", [0, 2])
def test_attention_with_cache_equals_attention_without(n_kv_head, capacity):
    torch.manual_seed(0)
    attn = LlamaGenAttention(32, n_head=4, n_kv_head=n_kv_head).eval()
    x = torch.randn(2, 9, 32)
    rope = rope_1d(9, 8)
    full = attn(x, rope)
    cache, outs = KVCache(capacity), []
    for start, end in [(0, 4), (4, 5), (5, 9)]:  # a prefill of 4, then one token, then a chunk
        outs.append(attn(x[:, start:end], rope[start:end], cache=cache))
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-6, rtol=1e-5)
    assert len(cache) == 9


def test_a_static_cache_writes_in_place_into_one_buffer_and_refuses_to_overflow():
    cache = KVCache(capacity=5)
    k = torch.randn(2, 3, 4, 8)
    cache.append(k, k + 1)
    buffer = cache.k
    keys, values = cache.append(k[:, :, :1], k[:, :, :1] + 1)
    assert cache.k is buffer and keys.data_ptr() == buffer.data_ptr() and buffer.shape == (2, 3, 5, 8)
    assert torch.equal(keys, torch.cat([k, k[:, :, :1]], 2)) and torch.equal(values, keys + 1)
    with pytest.raises(ValueError, match="holds 5 positions"):
        cache.append(k[:, :, :1], k[:, :, :1])


def test_attention_is_causal_by_default():
    torch.manual_seed(0)
    block = LlamaGenBlock(32, 4)
    x = torch.randn(1, 6, 32, requires_grad=True)
    block(x, rope_1d(6, 8))[0, 2].sum().backward()
    assert x.grad[0, 3:].abs().sum() == 0 and x.grad[0, :3].abs().sum() > 0


def test_adaln_zero_init_is_the_identity_and_chunks_follow_the_linear():
    ada = AdaLN(cond_dim=5, dim=3, n_chunks=2)
    torch.nn.init.zeros_(ada.linear.weight)
    torch.nn.init.zeros_(ada.linear.bias)
    shift, scale = ada(torch.randn(2, 5))
    x = torch.randn(2, 4, 3)
    assert torch.equal(modulate(x, shift, scale), x)
    torch.manual_seed(1)
    ada = AdaLN(cond_dim=5, dim=3, n_chunks=2)
    cond = torch.randn(2, 5)
    out = ada.linear(F.silu(cond))
    shift, scale = ada(cond)
    assert shift.shape == (2, 1, 3)
    torch.testing.assert_close(shift[:, 0], out[:, :3])
    torch.testing.assert_close(modulate(x, shift, scale), x * (1 + out[:, None, 3:]) + out[:, None, :3])


def test_a_static_cache_starts_zeroed_so_a_masked_position_cannot_bring_nan():
    """A fixed-shape step attends over the whole buffer, unwritten positions masked; softmax gives them weight 0,
    but 0 x NaN is NaN, so the buffer must not hold what empty memory happened to hold (a flaky NaN otherwise)."""
    cache = KVCache(capacity=6)
    k = torch.randn(1, 2, 3, 4)
    cache.append(k, k + 1)
    zeros = torch.zeros(1, 2, 3, 4)
    assert torch.equal(cache.k[:, :, 3:], zeros) and torch.equal(cache.v[:, :, 3:], zeros)
