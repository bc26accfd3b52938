"""Next-scale prediction (VAR, Tian et al. 2024): generate an image coarse to fine, one whole scale per step.

The tokens of the multi-scale tokenizer (msvq.py) are r_1 (1x1), r_2 (2x2), ..., r_K (h x w). VAR models

    p(r_1, ..., r_K | class) = prod_k p(r_k | r_1, ..., r_{k-1}, class)

and predicts all tokens of scale k at once, in parallel. The transformer's input for scale k is the
reconstruction so far (the cumulative f_hat after scale k-1) area-downsampled to scale k's size: every
position of the new scale sees a blurry version of the whole image, not just what lies above-left of it.

    sequence: [class token (1 position)] [f_hat_1 at 2x2 (4)] [f_hat_2 at 3x3 (9)] ...   L = sum of s_k^2
    predicts:  r_1                        r_2                  r_3 ...

The mask is block-causal: a token sees every token of its own scale and of all coarser scales. Generation
takes K forward passes (6 for the emoji schedule) instead of one per token.

As the official models/var.py and basic_var.py:
- the class embedding (one extra row: the null class, used with probability class_dropout in training, for
  classifier-free guidance) is the start token (+ a learned start position) *and* the condition of every
  AdaLN layer; learned absolute positions for all L tokens + a learned embedding per scale (level);
- blocks are AdaLN self-attention: LayerNorm without affine, modulated by (shift, scale) from the class, each
  residual branch multiplied by a gate gamma (initialised near 0, so blocks start almost switched off);
- attention normalises q and k to unit length and multiplies by a learned per-head temperature (at most
  100): the logits are cosine similarities, which keeps training stable;
- an AdaLN norm before the output head; GELU (tanh) feed-forward.
At inference guidance ramps up with the scale: s_k = 1 + (guidance - 1) * k / (K - 1), logits
uncond + s_k (cond - uncond), so the first scale is sampled without guidance. (The official code writes the same
thing as t_k = cfg * k / (K - 1) and (1 + t_k) cond - t_k uncond: its cfg is minivar's guidance - 1.)

Where minivar differs: label dropout happens only in training (the official forward drops labels in eval
mode too); the tokenizer is attached with `bind` (the official keeps a hidden reference to the VQVAE), so
the generator's checkpoint holds only the transformer.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .models import Generator, register
from .sampling import TokenSampling, compile_switch, guidance_mix, raise_if_nonfinite, ramp_over_scales, sample
from .scales import block_causal_mask, split_scales
from .transformer import AdaLN, ClassEmbedding, KVCache, init_weights, modulate


@dataclass
class VARConfig:
    renamed = {"vocab_size": "codebook_size"}  # fields of checkpoints from an older minivar, old -> new (models.py)

    codebook_size: int = 0  # the tokenizer's codebook size (0: read from the tokenizer when built for training)
    scales: tuple = ()  # the tokenizer's schedule, e.g. (1, 2, 3, 4, 6, 8) (empty: read from the tokenizer)
    code_dim: int = 0  # the tokenizer's code dimension, the teacher-forcing input's channels (0: from the tokenizer)
    num_classes: int = 9
    depth: int = 4
    dim: int = 192
    n_head: int = 4
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    class_dropout: float = 0.1  # label -> null class in training (classifier-free guidance)
    dropout: float = 0.0  # after the attention projection and the feed-forward
    attn_dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth, rising linearly to this rate over the blocks (VAR: 0.1 * depth / 24)
    attn_l2_norm: bool = True  # cosine attention with a learned temperature (VAR's default for its models)
    shared_aln: bool = False  # one AdaLN projection shared by all blocks, plus a learned offset per block
    init_gate: float = 1e-5  # AdaLN gate rows start x this (the release's `alng`: 1e-3 in its d16 script, 1e-5 at d30)
    label_smoothing: float = 0.0  # training loss only (the release's `ls`, 0 in its runs); test loss stays plain
    loss_weighting: str = "token"  # "token": every token counts the same (the release); "scale": every scale does
    guidance: float = 2.5  # default guidance of generate(), reached at the last scale (1 = none; official cfg 1.5)

    def __post_init__(self):
        self.scales = tuple(self.scales)
        if self.dim % self.n_head:
            raise ValueError(f"dim {self.dim} must be divisible by n_head {self.n_head}")
        if list(self.scales) != sorted(set(self.scales)):
            raise ValueError(f"scales must increase, got {self.scales}")
        if self.loss_weighting not in ("token", "scale"):
            raise ValueError(f"loss_weighting must be 'token' or 'scale', got {self.loss_weighting!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    @property
    def seq_len(self) -> int:  # tokens per image, all scales
        return sum(s * s for s in self.scales)


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for a whole sample with probability p (scaled by 1/(1-p))."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0 or not self.training:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class VARAttention(nn.Module):
    def __init__(self, dim, n_head, l2_norm=True, attn_dropout=0.0, dropout=0.0):
        super().__init__()
        self.n_head, self.head_dim, self.l2_norm, self.attn_dropout = n_head, dim // n_head, l2_norm, attn_dropout
        self.mat_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(dim)), nn.Parameter(torch.zeros(dim))
        self.register_buffer("zero_k_bias", torch.zeros(dim))  # keys get no bias (a bias on k shifts every score
        # of a query by the same amount, which softmax ignores)
        if l2_norm:  # log of the per-head temperature multiplying the cosine similarities, starts at 4
            self.scale_mul = nn.Parameter(torch.full((1, n_head, 1, 1), math.log(4.0)))
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x, mask=None, cache: KVCache = None):
        B, L, C = x.shape
        qkv = F.linear(x, self.mat_qkv.weight, torch.cat([self.q_bias, self.zero_k_bias, self.v_bias]))
        q, k, v = rearrange(qkv, "b l (three h d) -> three b h l d", three=3, h=self.n_head)
        if self.l2_norm:
            q = F.normalize(q, dim=-1) * self.scale_mul.clamp(max=math.log(100)).exp()
            k = F.normalize(k, dim=-1)
            scale = 1.0
        else:
            scale = 0.25 / math.sqrt(self.head_dim)  # the official choice without l2 norm
        if cache is not None:
            k, v = cache.append(k, v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        return self.proj_drop(self.proj(rearrange(y, "b h l d -> b l (h d)")))


class FeedForward(nn.Module):
    def __init__(self, dim, hidden, dropout=0.0):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.fc2(F.gelu(self.fc1(x), approximate="tanh")))


class VARBlock(nn.Module):
    """x + gamma1 * attn(LN(x) * (1 + scale1) + shift1), then the same with the feed-forward; the six vectors
    come from the class condition (VAR's chunk order: gamma1, gamma2, scale1, scale2, shift1, shift2)."""

    def __init__(self, cfg: VARConfig, drop_path: float):
        super().__init__()
        self.shared_aln = cfg.shared_aln
        self.ln = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps, elementwise_affine=False)
        self.attn = VARAttention(cfg.dim, cfg.n_head, cfg.attn_l2_norm, cfg.attn_dropout, cfg.dropout)
        self.ffn = FeedForward(cfg.dim, round(cfg.dim * cfg.mlp_ratio), cfg.dropout)
        self.drop_path = DropPath(drop_path)
        if cfg.shared_aln:  # this block's offset to the shared projection
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, cfg.dim) / cfg.dim ** 0.5)
        else:
            self.ada_lin = AdaLN(cfg.dim, cfg.dim, 6)

    def forward(self, x, cond, mask=None, cache=None):
        """cond: the class embedding (B, D), or with shared_aln the shared projection (B, 1, 6, D)."""
        if self.shared_aln:
            gamma1, gamma2, scale1, scale2, shift1, shift2 = (self.ada_gss + cond).unbind(2)
        else:
            gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(cond)
        x = x + self.drop_path(self.attn(modulate(self.ln(x), shift1, scale1), mask, cache) * gamma1)
        return x + self.drop_path(self.ffn(modulate(self.ln(x), shift2, scale2)) * gamma2)


@dataclass(frozen=True)
class VARSampling(TokenSampling):
    """VAR's sampling: token sampling whose guidance ramps linearly over the scales, as the release does."""
    guidance_schedule: str = ramp_over_scales()
    compile: bool = compile_switch()


@register("var", VARConfig)
class VAR(Generator):
    from_tokenizer = ("codebook_size", "scales", "code_dim")
    options_class = VARSampling

    def __init__(self, cfg: VARConfig):
        super().__init__(cfg)
        D, L, first = cfg.dim, cfg.seq_len, cfg.scales[0] ** 2
        std = math.sqrt(1 / D / 3)
        self.word_embed = nn.Linear(cfg.code_dim, D)  # teacher-forcing input (code space) -> model width
        self.class_embedding = ClassEmbedding(cfg.num_classes, D, cfg.class_dropout)  # + the null class
        self.pos_start = nn.Parameter(torch.empty(1, first, D))
        self.pos_1LC = nn.Parameter(torch.empty(1, L, D))  # absolute position of each token of each scale
        self.lvl_embed = nn.Embedding(len(cfg.scales), D)  # which scale a token belongs to
        nn.init.trunc_normal_(self.pos_start, std=std)
        nn.init.trunc_normal_(self.pos_1LC, std=std)
        if cfg.shared_aln:
            self.shared_ada_lin = AdaLN(D, D, 6)
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(VARBlock(cfg, rates[i]) for i in range(cfg.depth))
        self.head_ln = nn.LayerNorm(D, eps=cfg.norm_eps, elementwise_affine=False)
        self.head_ada = AdaLN(D, D, 2)  # (scale, shift) of the norm before the head
        self.head = nn.Linear(D, cfg.codebook_size)
        level = torch.cat([torch.full((s * s,), k) for k, s in enumerate(cfg.scales)])
        self.register_buffer("level", level, persistent=False)  # (L,) scale index of every token
        mask = torch.zeros(L, L).masked_fill(~block_causal_mask(cfg.scales), float("-inf"))
        self.register_buffer("attn_bias", mask, persistent=False)  # additive: 0 = may attend, -inf = may not
        self.init_weights()

    def init_weights(self, init_adaln=0.5, init_head=0.02):
        """VAR's initialisation: trunc-normal(sqrt(1/(3D))) weights, zero biases, a small head, AdaLN scale/shift
        rows x0.5 and gate rows x cfg.init_gate (each block starts as nearly the identity), output projections
        / sqrt(2 depth)."""
        D = self.cfg.dim
        init_weights(self, std=math.sqrt(1 / D / 3), truncated=True)
        with torch.no_grad():
            self.head.weight.mul_(init_head)
            self.head_ada.linear.weight.mul_(init_adaln)
            for block in self.blocks:
                block.attn.proj.weight.div_(math.sqrt(2 * self.cfg.depth))
                block.ffn.fc2.weight.div_(math.sqrt(2 * self.cfg.depth))
                if self.cfg.shared_aln:
                    block.ada_gss[:, :, 2:].mul_(init_adaln)
                    block.ada_gss[:, :, :2].mul_(self.cfg.init_gate)
                else:
                    block.ada_lin.linear.weight[2 * D:].mul_(init_adaln)
                    block.ada_lin.linear.weight[:2 * D].mul_(self.cfg.init_gate)

    @property
    def quantizer(self):
        """The bound tokenizer's multi-scale quantizer: it turns sampled tokens into the next scale's input."""
        return self.tokenizer.quantizer

    # --- training -------------------------------------------------------------------------------------------

    def condition(self, cond):
        return self.shared_ada_lin.linear(F.silu(cond)).view(-1, 1, 6, self.cfg.dim) if self.cfg.shared_aln else cond

    def logits(self, x, cond):
        scale, shift = self.head_ada(cond)
        return self.head(modulate(self.head_ln(x), shift, scale)).float()

    def forward(self, labels, teacher_forcing_input):
        """labels (B,), teacher_forcing_input (B, L - s_1^2, code_dim) (msvq's teacher_forcing_input)
        -> logits (B, L, vocab) for every token of every scale."""
        B, L = labels.shape[0], self.cfg.seq_len
        first = self.cfg.scales[0] ** 2
        if teacher_forcing_input.shape != (B, L - first, self.cfg.code_dim):
            raise ValueError(f"expected teacher_forcing_input ({B}, {L - first}, {self.cfg.code_dim}), got "
                             f"{tuple(teacher_forcing_input.shape)}")
        cond = self.class_embedding(labels)  # (B, D); labels dropped at random in training
        start = cond[:, None].expand(B, first, -1) + self.pos_start  # (B, first, D)
        x = torch.cat([start, self.word_embed(teacher_forcing_input.float())], dim=1)
        x = x + self.lvl_embed(self.level)[None] + self.pos_1LC  # (B, L, D)
        c = self.condition(cond)
        for block in self.blocks:
            x = block(x, c, self.attn_bias)
        return self.logits(x, cond)

    def loss(self, batch, progress: float = 0.0):
        """tokens (B, L): all scales flattened, coarsest first (the token cache's layout). Mean cross-entropy.

        The release weighs every token alike, so the last scale (64 of 130 tokens at 8x8) carries half the loss and
        the 1x1 start under 1%; loss_weighting="scale" gives each scale the same share instead (an ablation).
        Both apply in training only: in eval mode the loss is the plain per-token cross-entropy, comparable across
        runs."""
        tokens, labels = batch
        maps = split_scales(tokens, self.cfg.scales)
        logits = self(labels, self.quantizer.teacher_forcing_input(maps))  # (B, L, V)
        smoothing = self.cfg.label_smoothing if self.training else 0.0
        per_token = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none",
                                    label_smoothing=smoothing).view(tokens.shape)
        if self.cfg.loss_weighting == "scale" and self.training:  # 1 / (K s_k^2) per token: the mean of scale means
            sizes = torch.tensor([s * s for s in self.cfg.scales], device=tokens.device, dtype=per_token.dtype)
            loss = (per_token / (len(self.cfg.scales) * sizes[self.level])).sum(1).mean()
        else:
            loss = per_token.mean()
        last = self.cfg.scales[-1] ** 2
        return loss, {"loss_last_scale": per_token[:, -last:].detach().mean()}

    # --- generation -------------------------------------------------------------------------------------------

    def decode_step(self, x, c, cond, caches):
        """One scale's pass: its inputs x (B, s*s, D) -> its logits (B, s*s, V). Every block writes the scale's keys
        and values after the coarser ones in its static cache and attends to all of them (block-causal needs no mask
        here: a scale sees itself and everything before it). The shapes are fixed within a scale, so torch.compile
        makes one graph per scale (sampling option compile)."""
        for block, cache in zip(self.blocks, caches):
            x = block(x, c, None, cache)
        return self.logits(x, cond)

    @torch.no_grad()
    def generate(self, labels, options=None, *, generator=None, trace=None, prefix=None, **overrides):
        """Sample token maps [(B, s_k, s_k)], coarsest first, one scale per forward pass (KV cache).

        Options: VARSampling (overrides such as guidance=4.0, top_p=0.8). Guidance ramps with the scale as VAR does
        (guidance_schedule "linear"): s_k = 1 + (guidance - 1) * k / (K - 1), logits uncond + s_k (cond - uncond), so
        the first scale is unguided and the last gets `guidance` (default: the config's). guidance = 1 switches it
        off (and halves the work: no unconditional pass); "constant" guides every scale alike (an ablation: the
        release always ramps). compile=True runs every scale after the first through the compiled decode_step. A
        list given as `trace` receives {"scale", "guidance", "logits" (B, s*s, V, guided), "tokens" (B, s, s)} for
        each scale.

        `prefix`, a list of the first j scales' maps [(B, s_1, s_1), ...], fixes those scales (completion: VAR's
        zero-shot in- and out-painting teacher-forces known tokens the same way); the model still reads them, so the
        finer scales are sampled given them.
        """
        q = self.quantizer
        with self.sampling(labels, options, **overrides) as run:
            prefix = self.check_prefix(prefix, run.batch)
            B, K, D, o = run.batch, len(self.cfg.scales), self.cfg.dim, run.options
            if B == 0:  # no labels, no samples (of the right shape)
                return [torch.zeros(0, s, s, dtype=torch.long, device=self.device) for s in self.cfg.scales]
            guided = run.schedule.guided  # the conditions' second half: the same samples without their class
            cond = self.class_embedding(run.conditions)  # (B or 2B, D)
            c = self.condition(cond)
            level_pos = self.lvl_embed(self.level)[None] + self.pos_1LC  # (1, L, D)
            first = self.cfg.scales[0] ** 2
            x = cond[:, None].expand(len(cond), first, D) + self.pos_start + level_pos[:, :first]
            L = sum(s * s for s in self.cfg.scales)  # the caches hold every scale's tokens
            caches = self.sampling_caches(lambda fixed: [KVCache(L, fixed) for _ in self.blocks], o.compile, len(cond))
            step = self.compiled_step() if o.compile else self.decode_step
            nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)  # checked once, after the loop
            f_hat, maps, start = None, [], 0
            for k, s in enumerate(self.cfg.scales):
                # the first scale allocates the caches (and is one token): never compiled
                logits = (step if k else self.decode_step)(x, c, cond, caches)  # (B or 2B, s*s, V)
                s_k = run.schedule.at(k, K)
                if guided:
                    logits = guidance_mix(logits[:B], logits[B:], s_k)
                if k < len(prefix):  # a given scale: read, not sampled
                    idx = prefix[k]
                else:
                    flat = logits.reshape(B * s * s, -1)
                    idx = sample(flat, o.temperature, o.top_k, o.top_p, generator, nonfinite).view(B, s, s)
                maps.append(idx)
                if trace is not None:
                    trace.append({"scale": k, "guidance": s_k, "logits": logits, "tokens": idx})
                f_hat, nxt = q.next_input(k, f_hat, idx)
                start += s * s
                if k < K - 1:
                    s_next = self.cfg.scales[k + 1]
                    x = self.word_embed(rearrange(nxt, "b c h w -> b (h w) c"))
                    x = x + level_pos[:, start:start + s_next ** 2]
                    x = torch.cat([x, x]) if guided else x
            raise_if_nonfinite(nonfinite, o.temperature)
        return maps

    def check_prefix(self, prefix, batch: int) -> list:
        """[] for None; else the given scales as LongTensors on the model's device, each checked."""
        if prefix is None:
            return []
        scales = self.cfg.scales
        if not isinstance(prefix, (list, tuple)) or len(prefix) > len(scales):
            raise ValueError(f"prefix must be a list of the first scales' token maps (at most {len(scales)}: "
                             f"{', '.join(f'({batch}, {s}, {s})' for s in scales)}), got {type(prefix).__name__}")
        out = []
        for k, m in enumerate(prefix):
            m = torch.as_tensor(m, device=self.device)
            s = scales[k]
            if m.shape != (batch, s, s) or m.is_floating_point() or m.dtype == torch.bool:
                raise ValueError(f"prefix[{k}] must be a LongTensor of tokens ({batch}, {s}, {s}) (scale {k + 1} of "
                                 f"{scales}), got {m.dtype} {tuple(m.shape)}")
            if m.numel() and (int(m.min()) < 0 or int(m.max()) >= self.cfg.codebook_size):
                raise ValueError(f"prefix[{k}] holds tokens outside [0, {self.cfg.codebook_size}): "
                                 f"[{int(m.min())}, {int(m.max())}]")
            out.append(m.long())
        return out


__all__ = ["VARConfig", "VAR", "VARSampling", "VARBlock", "VARAttention"]
