"""The transformer parts every generator of the course shares: Llama blocks, a KV cache, rotary positions, AdaLN.

    block = LlamaGenBlock(dim=256, n_head=8)            # pre-norm: x + attn(norm(x)), then x + ffn(norm(x))
    rope = rope_2d(8, 8, head_dim=32)                   # (64, 16, 2): cos/sin for every (row, col) of an 8x8 grid
    y = block(x, rope)                                  # causal self-attention over x (B, L, 256)

The pieces, as LlamaGen (autoregressive/models/gpt.py) builds them:
- RMSNorm: x / rms(x) * weight, computed in fp32 (bf16's few mantissa bits make the mean of squares unreliable);
- SwiGLU feed-forward: w2(silu(w1 x) * w3 x) with hidden size 2/3 of 4*dim rounded up to `multiple_of`
  (the 2/3 keeps the parameter count of a plain 4*dim MLP, which has two matrices instead of three);
- attention on F.scaled_dot_product_attention with one fused q/k/v projection, grouped-query heads
  (n_kv_head < n_head shares each key/value head among several query heads), and a KV cache so that
  generation computes each token's keys and values once;
- rotary embeddings (RoPE): each pair of channels (x[2i], x[2i+1]) of a query or key is rotated by an angle
  position * freq_i, so q.k depends only on the *difference* of positions. In 2-D (rope_2d) half of the pairs
  rotate with the row, the other half with the column;
- AdaLN: a condition vector (e.g. the class embedding) predicts per-channel shift/scale/gate of the norms
  (DiT, VAR); used by the next-scale and random-order transformers;
- ClassEmbedding: one row per class plus the null class, which replaces a label at random in training so one
  network learns p(x | class) and p(x) — what classifier-free guidance mixes (LlamaGen's LabelEmbedder).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - n % k


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None  # no weight before an AdaLN modulation

    def forward(self, x):
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) if self.weight is None else normed.type_as(x) * self.weight


def swiglu_hidden(dim: int, multiple_of: int = 256, ffn_dim_multiplier: float = 0.0) -> int:
    """LlamaGen's (and Llama's) hidden size rule: 2/3 * 4 * dim, optionally scaled, rounded up to multiple_of."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier:
        hidden = int(ffn_dim_multiplier * hidden)
    return find_multiple(hidden, multiple_of)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w3 = nn.Linear(dim, hidden, bias=False)  # value
        self.w2 = nn.Linear(hidden, dim, bias=False)  # back to dim
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


# ----------------------------------------------------------------------------------------------- rotary

def rope_frequencies(n_pairs: int, base: float = 10000.0) -> torch.Tensor:
    """freq_i = base^(-2i / (2 n_pairs)), i < n_pairs: from one turn per position down to very slow turns."""
    return 1.0 / base ** (torch.arange(0, 2 * n_pairs, 2)[:n_pairs].float() / (2 * n_pairs))


def _with_prefix(angles: torch.Tensor, prefix: int, prefix_rope: str) -> torch.Tensor:
    """(L, n_pairs) angles -> (prefix + L, n_pairs, 2) cos/sin, with `prefix` rows for the class token(s).

    prefix_rope="identity" leaves the class token unrotated (cos 1, sin 0). "zeros" is what LlamaGen does
    (cos = sin = 0), which multiplies the class token's query and key by zero: its key then scores 0 against
    every query and its query attends uniformly. Harmless, but needed to reproduce official weights exactly.
    """
    cache = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (L, n_pairs, 2)
    if prefix_rope == "zeros":
        pre = torch.zeros(prefix, angles.shape[1], 2)
    elif prefix_rope == "identity":
        pre = torch.stack([torch.ones(prefix, angles.shape[1]), torch.zeros(prefix, angles.shape[1])], dim=-1)
    else:
        raise ValueError(f"prefix_rope must be 'identity' or 'zeros', got {prefix_rope!r}")
    return torch.cat([pre, cache])


def rope_1d(length: int, head_dim: int, base: float = 10000.0, prefix: int = 0, prefix_rope="identity"):
    """cos/sin (prefix + length, head_dim // 2, 2) for positions 0..length-1 of a sequence."""
    angles = torch.outer(torch.arange(length).float(), rope_frequencies(head_dim // 2, base))
    return _with_prefix(angles, prefix, prefix_rope)


def rope_2d(rows: int, cols: int, head_dim: int, base: float = 10000.0, prefix: int = 0, prefix_rope="identity",
            frame: float = 0.0):
    """cos/sin (prefix + rows*cols, head_dim // 2, 2) for a raster-ordered grid.

    LlamaGen's layout: the first half of the head's channel pairs turn with the row index, the second half
    with the column index, both with the frequencies of a head of half the size. With `frame` > 0 the positions
    are arange(n) / n * frame instead of 0, 1, 2, ...: grids of every size share one coordinate frame (FlowAR's
    scales: the 2x2 grid's second row sits where the 16x16 grid's ninth does, as EVA-02's rotary embedding does).
    """
    freqs = rope_frequencies(head_dim // 4, base)  # (head_dim/4,)
    rows_at = torch.arange(rows) / rows * frame if frame else torch.arange(rows).float()
    cols_at = torch.arange(cols) / cols * frame if frame else torch.arange(cols).float()
    row_angles = torch.outer(rows_at, freqs)  # (rows, head_dim/4)
    col_angles = torch.outer(cols_at, freqs)  # (cols, head_dim/4)
    angles = torch.cat([row_angles[:, None, :].expand(rows, cols, -1),
                        col_angles[None, :, :].expand(rows, cols, -1)], dim=-1)  # (rows, cols, head_dim/2)
    return _with_prefix(angles.reshape(rows * cols, -1), prefix, prefix_rope)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate the channel pairs (x[2i], x[2i+1]) of x (B, L, H, D) by the cos/sin of rope (L, D/2, 2)."""
    xp = x.float().reshape(*x.shape[:-1], -1, 2)  # (B, L, H, D/2, 2)
    cos, sin = rope[None, :, None, :, 0], rope[None, :, None, :, 1]  # (1, L, 1, D/2)
    out = torch.stack([xp[..., 0] * cos - xp[..., 1] * sin,
                       xp[..., 0] * sin + xp[..., 1] * cos], dim=-1)
    return out.flatten(-2).type_as(x)


# -------------------------------------------------------------------------------------------- attention

class KVCache:
    """Keys and values of the positions seen so far, (B, H_kv, L, D), for sampling one token (or scale) at a time.

    With `capacity` (the whole sequence's length, which every sampler knows) the cache is static: one buffer for
    the keys and one for the values, allocated at the first step for the whole sequence; each step writes its
    positions in place and attention reads a view of the filled part. Without it, the cache grows by torch.cat,
    which copies the whole past at every step (on a GPU a fifth of a raster sample's time went to those copies)
    and allocates anew each time; it stays as the simple form to read first."""

    def __init__(self, capacity: int = 0, fixed_address: bool = False):
        self.capacity, self.n, self.fixed_address = capacity, 0, fixed_address
        self.k = self.v = None

    def reset(self):
        """Empty the cache for a new sequence, keeping (and zeroing) its buffers."""
        self.n = 0
        for buffer in (self.k, self.v) if self.capacity and self.k is not None else ():
            buffer.zero_()

    def __len__(self):
        return self.n

    def append(self, k, v):
        """Add k, v (B, H_kv, L, D) after the positions already held -> every position's keys and values."""
        L = k.shape[2]
        if not self.capacity:
            self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
            self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        else:
            if self.n + L > self.capacity:
                raise ValueError(f"the KV cache holds {self.capacity} positions; {self.n} + {L} do not fit")
            if self.k is None:  # the one allocation: the whole sequence's keys and values, zeroed (a fixed-shape
                # step attends over the whole buffer with the unwritten part masked, and a masked weight 0 times
                # whatever garbage empty memory holds, NaN included, is NaN)
                self.k = k.new_zeros(*k.shape[:2], self.capacity, k.shape[3])
                self.v = v.new_zeros(*v.shape[:2], self.capacity, v.shape[3])
                if self.fixed_address:  # kept across samples (CompiledStep.caches): compiled code, a CUDA graph
                    # above all, may read and write them in place at their address instead of copying them in
                    torch._dynamo.mark_static_address(self.k)
                    torch._dynamo.mark_static_address(self.v)
            self.k[:, :, self.n:self.n + L] = k
            self.v[:, :, self.n:self.n + L] = v
        self.n += L
        return (self.k, self.v) if not self.capacity else (self.k[:, :, :self.n], self.v[:, :, :self.n])

    def filled_through(self, position: torch.Tensor) -> torch.Tensor:
        """(capacity,) bool: the slots a query at `position` (0-dim tensor) may attend to in a fixed-shape step,
        itself and every earlier one (the later slots hold nothing yet, or an earlier sample's leftovers)."""
        return torch.arange(self.capacity, device=position.device) <= position

    def write(self, positions: torch.Tensor, k, v):
        """Write k, v (B, H_kv, L, D) at `positions` (L,) of a static cache already holding the sequence's start,
        and return the whole buffers: shapes that do not change from step to step (what a compiled step needs;
        the caller masks the positions not written yet)."""
        self.k.index_copy_(2, positions, k)
        self.v.index_copy_(2, positions, v)
        return self.k, self.v


def one_query_attention():
    """The attention of a one-token decoding step as a plain matmul, softmax and matmul (SDPA's math backend), which
    torch.compile fuses into the step, as LlamaGen's sampler chooses too. The CPU's flash kernel, tiled for long
    queries, took a third of a compiled batch-64 raster step for its single query."""
    return sdpa_kernel(SDPBackend.MATH)


def causal_mask(n_new: int, n_past: int = 0, device=None) -> torch.Tensor:
    """(n_new, n_past + n_new) bool, True = may attend: new token i sees every past token and new tokens <= i."""
    return torch.ones(n_new, n_past + n_new, dtype=torch.bool, device=device).tril(n_past)


class LlamaGenAttention(nn.Module):
    def __init__(self, dim: int, n_head: int, n_kv_head: int = 0, dropout: float = 0.0):
        super().__init__()
        n_kv_head = n_kv_head or n_head
        if dim % n_head or n_head % n_kv_head:
            raise ValueError(f"dim {dim} must be divisible by n_head {n_head}, and n_head by n_kv_head {n_kv_head}")
        self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, dim // n_head
        self.wqkv = nn.Linear(dim, (n_head + 2 * n_kv_head) * self.head_dim, bias=False)  # one matmul for q, k, v
        self.wo = nn.Linear(dim, dim, bias=False)
        self.dropout = dropout

    def forward(self, x, rope=None, mask=None, cache: KVCache = None, positions=None):
        """x (B, L, dim); rope (L, head_dim/2, 2) for x's positions; mask (L, L_total) bool or None = causal.
        With `positions` (L,) the cache is written there and read whole (KVCache.write; mask then required)."""
        B, L, _ = x.shape
        q, k, v = self.wqkv(x).split([self.n_head * self.head_dim, self.n_kv_head * self.head_dim,
                                      self.n_kv_head * self.head_dim], dim=-1)
        # plain views, not einops: a compiled decoding step checks a guard for every einops internal dynamo traced
        # (about 60 here), at every token, a sixth of a compiled step's time at batch 1 on a CPU
        q = q.view(B, L, self.n_head, self.head_dim)  # (B, L, H, D)
        k = k.view(B, L, self.n_kv_head, self.head_dim)
        v = v.view(B, L, self.n_kv_head, self.head_dim)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, D)
        n_past = 0
        if cache is not None and positions is not None:
            k, v = cache.write(positions, k, v)  # (B, H_kv, capacity, D), the mask hides what is not written yet
        elif cache is not None:
            n_past = len(cache)
            k, v = cache.append(k, v)  # now (B, H_kv, n_past + L, D)
        if mask is None:
            mask = causal_mask(L, n_past, x.device)
        if self.n_kv_head != self.n_head:  # grouped-query: each key/value head serves n_head / n_kv_head queries
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.wo(y.transpose(1, 2).reshape(B, L, self.n_head * self.head_dim))  # (B, L, H * D)


class LlamaGenBlock(nn.Module):
    """A Llama block: x + attention(RMSNorm(x)), then x + SwiGLU(RMSNorm(x))."""

    def __init__(self, dim, n_head, n_kv_head=0, multiple_of=256, ffn_dim_multiplier=0.0, norm_eps=1e-5,
                 dropout=0.0):
        super().__init__()
        self.attention_norm = RMSNorm(dim, norm_eps)
        self.attention = LlamaGenAttention(dim, n_head, n_kv_head)
        self.ffn_norm = RMSNorm(dim, norm_eps)
        self.feed_forward = SwiGLU(dim, swiglu_hidden(dim, multiple_of, ffn_dim_multiplier), dropout)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x, rope=None, mask=None, cache=None, positions=None):
        x = x + self.resid_dropout(self.attention(self.attention_norm(x), rope, mask, cache, positions))
        return x + self.feed_forward(self.ffn_norm(x))


# ------------------------------------------------------------------------------------------------ AdaLN

class AdaLN(nn.Module):
    """Condition -> n_chunks per-channel vectors (e.g. gamma1, gamma2, scale1, scale2, shift1, shift2 of VAR).

    A SiLU then one Linear, as DiT and VAR; each chunk is (B, 1, dim) so it broadcasts over the tokens (or
    (B, L, dim) for a condition per token, as RAR's).
    """

    def __init__(self, cond_dim: int, dim: int, n_chunks: int = 6):
        super().__init__()
        self.n_chunks = n_chunks
        self.linear = nn.Linear(cond_dim, n_chunks * dim)

    def forward(self, cond):  # (B, cond_dim) -> n_chunks x (B, 1, dim); (B, L, cond_dim): one per token (RAR)
        out = self.linear(F.silu(cond))
        return (out.unsqueeze(1) if out.ndim == 2 else out).chunk(self.n_chunks, dim=-1)


def modulate(x, shift, scale):
    """The AdaLN step: x * (1 + scale) + shift (scale 0, shift 0 = identity, so a zero-initialised AdaLN starts
    as a plain norm)."""
    return x * (1 + scale) + shift


def init_weights(module: nn.Module, std: float = 0.02, truncated: bool = False):
    """LlamaGen's init: every Linear and Embedding weight ~ N(0, std), biases 0 (norms keep weight 1).
    truncated=True draws from N(0, std) cut at +-2 (absolute), as VAR does."""
    draw = nn.init.trunc_normal_ if truncated else nn.init.normal_
    for m in module.modules():
        if isinstance(m, nn.Linear):
            draw(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            draw(m.weight, std=std)


class ClassEmbedding(nn.Embedding):
    """Class labels (B,) -> vectors (B, dim): one row per class and a last row for the null class ("no class").

    In training each label becomes the null class with probability `dropout`, so the same network also learns
    the unconditional distribution; at sampling, running the batch once with the labels and once with the null
    class gives the two predictions classifier-free guidance mixes: uncond + s * (cond - uncond).
    """

    def __init__(self, num_classes: int, dim: int, dropout: float = 0.1):
        super().__init__(num_classes + 1, dim)
        self.num_classes, self.dropout = num_classes, dropout

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if self.training and self.dropout > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.dropout
            labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
        return super().forward(labels)


__all__ = ["RMSNorm", "SwiGLU", "swiglu_hidden", "find_multiple", "rope_frequencies", "rope_1d", "rope_2d",
           "apply_rope", "KVCache", "causal_mask", "LlamaGenAttention", "LlamaGenBlock", "AdaLN", "modulate",
           "init_weights", "ClassEmbedding"]
