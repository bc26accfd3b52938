"""Raster-order autoregression (LlamaGen, Sun et al. 2024): a class-conditional GPT over a tokenizer's token map.

The token map (B, h, w) is read like text, row by row, left to right, and the model learns

    p(t_1, ..., t_N | class) = prod_i p(t_i | t_<i, class)

The sequence the transformer sees is [class token, t_1, ..., t_{N-1}]; output i predicts t_{i+1}, so one
forward pass scores every token (teacher forcing) and generation takes N steps, one token each.

    model = RasterAR(RasterARConfig(codebook_size=1024, grid=8, num_classes=9))
    logits = model(tokens[:, :-1], labels)                  # (B, N, vocab), output i predicts token i
    loss = F.cross_entropy(logits.flatten(0, 1), tokens.flatten())
    maps = model.generate(labels, guidance=2.0, top_k=100)  # (B, 8, 8), decode with the tokenizer

(In training, `minivar.models.build("raster", config, tokenizer)` reads codebook_size and grid from the tokenizer.)

As LlamaGen's `autoregressive/models/gpt.py` (c2i): Llama blocks (RMSNorm, SwiGLU, 2-D RoPE), a class
embedding table with one extra row, the null class, that replaces the label with probability
`class_dropout` in training so the same network also models p(tokens) for classifier-free guidance; a
zero-initialised output head, so training starts from uniform predictions (loss = ln vocab).
Simplifications: one class token (LlamaGen's c2i models use one), no drop-path, no cfg_interval.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .models import Generator, register
from .sampling import CompiledTokens, guidance_mix, raise_if_nonfinite, sample
from .text import prefix_attention
from .transformer import (
    ClassEmbedding,
    KVCache,
    LlamaGenBlock,
    RMSNorm,
    init_weights,
    one_query_attention,
    rope_1d,
    rope_2d,
)


@dataclass
class LlamaGenConfig:
    """The GPT of both raster generators (the class-conditional one below, text_to_image's): sizes, positions,
    regularisation and the default guidance; each adds the fields of its condition."""
    renamed = {"vocab_size": "codebook_size"}  # fields of checkpoints from an older minivar, old -> new (models.py)

    codebook_size: int = 0  # the tokenizer's codebook size (0: read from the tokenizer when built for training)
    grid: int = 0  # token map side, 8 for 32x32 images through a 4x tokenizer (0: read from the tokenizer)
    dim: int = 256
    n_layer: int = 6
    n_head: int = 8
    n_kv_head: int = 0  # 0 = n_head (plain multi-head); fewer = grouped-query attention
    multiple_of: int = 64  # SwiGLU hidden size rounding (LlamaGen: 256)
    ffn_dim_multiplier: float = 0.0  # 0 = none
    norm_eps: float = 1e-5
    rope: str = "2d"  # "2d": rows and columns rotate separate channel pairs (LlamaGen); "1d": raster index
    rope_base: float = 10000.0
    prefix_rope: str = "identity"  # the condition tokens' rotation; "zeros" reproduces LlamaGen (transformer.py)
    dropout: float = 0.0  # residual / feed-forward dropout
    token_dropout: float = 0.0  # dropout on the input embeddings (LlamaGen's token_dropout_p)
    guidance: float = 2.0  # default classifier-free guidance of generate() (1 = none)

    def __post_init__(self):
        if self.dim % self.n_head:
            raise ValueError(f"dim {self.dim} must be divisible by n_head {self.n_head}")
        if (self.dim // self.n_head) % 4 and self.rope == "2d":
            raise ValueError(f"2-D RoPE splits each head into row and column pairs: head size dim/n_head = "
                             f"{self.dim // self.n_head} must be divisible by 4")
        if self.rope not in ("1d", "2d"):
            raise ValueError(f"rope must be '1d' or '2d', got {self.rope!r}")
        if self.prefix_rope not in ("identity", "zeros"):
            raise ValueError(f"prefix_rope must be 'identity' or 'zeros', got {self.prefix_rope!r}")

    @property
    def seq_len(self) -> int:  # tokens per image
        return self.grid * self.grid


@dataclass
class RasterARConfig(LlamaGenConfig):
    num_classes: int = 9  # the emoji groups; one more embedding row is the null class
    class_dropout: float = 0.1  # probability of training on the null class (enables classifier-free guidance)


@register("raster", RasterARConfig)
class RasterAR(Generator):
    options_class = CompiledTokens  # temperature, top-k, top-p, KV cache, compile; guidance constant over the tokens
    prefix_len = 1  # positions before the image tokens: the class token (text_to_image: the caption's words)

    def __init__(self, cfg: RasterARConfig):
        super().__init__(cfg)
        self.make_condition(cfg)
        self.tok_embeddings = nn.Embedding(cfg.codebook_size, cfg.dim)
        self.tok_dropout = nn.Dropout(cfg.token_dropout)
        self.layers = nn.ModuleList(LlamaGenBlock(cfg.dim, cfg.n_head, cfg.n_kv_head, cfg.multiple_of,
                                          cfg.ffn_dim_multiplier, cfg.norm_eps, cfg.dropout)
                                    for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.codebook_size, bias=False)
        head_dim = cfg.dim // cfg.n_head
        if cfg.rope == "2d":
            rope = rope_2d(cfg.grid, cfg.grid, head_dim, cfg.rope_base, prefix=self.prefix_len,
                           prefix_rope=cfg.prefix_rope)
        else:
            rope = rope_1d(cfg.seq_len, head_dim, cfg.rope_base, prefix=self.prefix_len, prefix_rope=cfg.prefix_rope)
        self.register_buffer("rope", rope, persistent=False)  # (P + N, head_dim/2, 2): the condition, then the grid
        init_weights(self)
        nn.init.zeros_(self.output.weight)  # uniform predictions at step 0: the loss starts at ln(codebook_size)

    # ---- the condition: what stands before the image tokens (text_to_image.TextToImage replaces these four)

    def make_condition(self, cfg):
        self.class_embedding = ClassEmbedding(cfg.num_classes, cfg.dim, cfg.class_dropout)  # + the null class

    @property
    def null_class(self) -> int:
        return self.class_embedding.null_class

    def condition(self, labels):
        """labels (B,) -> (the prefix tokens (B, 1, dim), the key mask: None, nothing to hide). In training a label
        is replaced by the null class with probability class_dropout."""
        return self.class_embedding(labels)[:, None], None

    def condition_mask(self, labels):
        return None  # (B, P) bool for a prefix with padding; None: plain causal attention

    def check_condition(self, labels, batch: int, values: bool = True):
        """The condition's type and shape, and (values=True) its range: an error that names what was expected."""
        if labels.dtype != torch.long or labels.shape != (batch,):
            raise ValueError(f"expected labels as a LongTensor ({batch},), got {labels.dtype} {tuple(labels.shape)}")
        if values and labels.numel() and (labels.min() < 0 or labels.max() > self.null_class):
            raise ValueError(f"labels must lie in [0, {self.cfg.num_classes}] ({self.cfg.num_classes} = null class)")

    def check_inputs(self, tokens, labels):
        N, V = self.cfg.seq_len, self.cfg.codebook_size
        if tokens.dtype != torch.long or tokens.ndim != 2 or tokens.shape[1] > N:
            raise ValueError(f"expected tokens as a LongTensor (B, T) with T <= {N} (flatten token maps "
                             f"with .flatten(1)), got {tokens.dtype} {tuple(tokens.shape)}")
        # reading values would make the CPU wait for the GPU at every step: in GPU training (checked data) only shapes
        values = not (tokens.is_cuda and self.training)
        self.check_condition(labels, tokens.shape[0], values)
        if values and tokens.numel() and (tokens.min() < 0 or tokens.max() >= V):
            raise ValueError(f"tokens must lie in [0, {V}) (the tokenizer's codebook), got "
                             f"[{tokens.min().item()}, {tokens.max().item()}]")

    def forward(self, tokens, labels, caches=None):
        """tokens (B, T) with T < N, labels (B,) -> logits (B, T + 1, vocab); output i predicts token i.

        With `caches` (one KVCache per layer) the call continues a sequence: `tokens` are the next positions,
        after the condition (the class token) and the tokens already in the caches, and the logits are for the
        positions after each of them (no condition this time unless the caches are empty).
        """
        self.check_inputs(tokens, labels)
        n_past, P = len(caches[0]) if caches is not None else 0, self.prefix_len
        if n_past + tokens.shape[1] + (P if n_past == 0 else 0) > self.cfg.seq_len + P:
            raise ValueError(f"the caches hold {n_past} positions; {tokens.shape[1]} more exceed the sequence of "
                             f"{P} + {self.cfg.seq_len} (condition + image tokens)")
        x = self.tok_embeddings(tokens)  # (B, T, dim)
        if n_past == 0:  # the sequence starts with the condition (dropped at random in training)
            prefix, key_mask = self.condition(labels)
            x = torch.cat([prefix, x], dim=1)
        else:
            key_mask = self.condition_mask(labels)
        mask = None if key_mask is None else prefix_attention(key_mask, x.shape[1], n_past)
        x = self.tok_dropout(x)
        rope = self.rope[n_past:n_past + x.shape[1]]
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, mask, cache=caches[i] if caches is not None else None)
        if n_past == 0:
            x = x[:, P - 1:]  # the condition's last position predicts the first image token
        return self.output(self.norm(x)).float()

    def decode_step(self, token, position, caches, key_mask=None):
        """One fed token -> the logits (B, V) of the token after it, with the same shapes at every position: what
        torch.compile can turn into one graph (sampling option compile). `token` (B, 1) sits at `position` (a 0-dim
        long tensor: its index in the whole sequence, the condition's positions first); every layer writes its key
        and value there in its static cache and attends over the whole buffer, the positions after it masked.
        `key_mask` (B, P): the condition positions that may be attended to (captions' padding hidden)."""
        capacity = caches[0].capacity
        x = self.tok_embeddings(token)
        rope = self.rope.index_select(0, position.view(1))
        visible = caches[0].filled_through(position)  # (capacity,)
        if key_mask is not None:
            visible = visible & torch.cat([key_mask, key_mask.new_ones(len(key_mask), capacity - key_mask.shape[1])],
                                          dim=1)  # (B, capacity)
        mask = visible.view(-1, 1, 1, capacity)  # broadcast over heads and the one query
        with one_query_attention():
            for layer, cache in zip(self.layers, caches):
                x = layer(x, rope, mask, cache=cache, positions=position.view(1))
        return self.output(self.norm(x[:, -1])).float()

    def loss(self, batch, progress: float = 0.0):
        """Teacher forcing: mean cross-entropy of every token of the (B, N) maps given the ones before it."""
        tokens, labels = batch
        tokens = tokens.flatten(1)
        logits = self(tokens[:, :-1], labels)  # (B, N, V)
        loss = F.cross_entropy(logits.flatten(0, 1), tokens.flatten())
        return loss, {"bits_per_token": loss.detach() / math.log(2)}

    @torch.no_grad()
    def generate(self, labels, options=None, *, generator=None, trace=None, prefix=None, **overrides):
        """Sample token maps (B, grid, grid) for class labels (B,), one token per step in raster order.

        Options: sampling.TokenByToken (overrides such as guidance=2.0, top_k=100). guidance s (default: the
        config's) != 1 runs the batch twice, with the labels and with the null class, and samples from
        uncond + s * (cond - uncond) (constant over the tokens, as LlamaGen; guidance_schedule can make it rise).
        use_cache=False recomputes the whole sequence at every step (slow; the reference the cache must match);
        compile=True runs every step after the first through the compiled decode_step.
        `prefix` (B, T) fixes the first T tokens (completion). A list given as `trace` receives
        {"step", "guidance", "logits" (B, V), "tokens" (B,)} for each sampled token.
        """
        with self.sampling(labels, options, **overrides) as run:
            B, N, o = run.batch, self.cfg.seq_len, run.options
            if B == 0:  # no labels, no samples (of the right shape)
                return torch.zeros(0, self.cfg.grid, self.cfg.grid, dtype=torch.long, device=self.device)
            guided, conditions = run.schedule.guided, run.conditions  # guided: the second half has no class
            both = (lambda t: torch.cat([t, t])) if guided else (lambda t: t)  # a batch fed with both conditions
            out = torch.zeros(B, N, dtype=torch.long, device=self.device)  # the tokens, written in place
            t = 0  # tokens known
            if prefix is not None:
                prefix = torch.as_tensor(prefix, device=self.device).flatten(1)
                if prefix.shape[0] != B or prefix.shape[1] > N or prefix.is_floating_point():
                    raise ValueError(f"prefix must hold ({B}, T) tokens (integers, T <= {N}; or maps), the first T "
                                     f"of each sample, got {prefix.dtype} {tuple(prefix.shape)}")
                t = prefix.shape[1]
                out[:, :t] = prefix
            step = self.compiled_step() if o.compile else None
            caches = self.sampling_caches(lambda fixed: [KVCache(self.prefix_len + N, fixed) for _ in self.layers],
                                          o.compile, len(conditions)) if o.use_cache or o.compile else None
            key_mask = self.condition_mask(conditions) if step is not None else None
            positions = torch.arange(self.prefix_len + N, device=self.device)  # each fed token's place
            new = both(out[:, :t])  # what the model has not seen yet
            token = torch.empty(len(conditions), 1, dtype=torch.long, device=self.device)  # each step's, in place
            nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)  # checked once, after the loop
            while t < N:  # no allocation and no wait for the GPU in here
                if step is not None and len(caches[0]):  # after the first step: one token, fixed shapes
                    logits = step(new, positions[self.prefix_len + t - 1], caches, key_mask)
                elif caches is not None:
                    logits = self(new, conditions, caches)[:, -1]  # (B or 2B, V)
                else:
                    logits = self(both(out[:, :t]), conditions)[:, -1]
                s_t = run.schedule.at(t, N)
                if guided:
                    logits = guidance_mix(logits[:B], logits[B:], s_t)
                nxt = sample(logits, o.temperature, o.top_k, o.top_p, generator, nonfinite)  # (B,)
                if trace is not None:
                    trace.append({"step": t, "guidance": s_t, "logits": logits, "tokens": nxt})
                out[:, t] = nxt
                token.view(-1, B).copy_(nxt.expand(len(conditions) // B, B))  # both halves feed the same token
                new, t = token, t + 1
            raise_if_nonfinite(nonfinite, o.temperature)
        return out.view(B, self.cfg.grid, self.cfg.grid)


__all__ = ["LlamaGenConfig", "RasterARConfig", "RasterAR"]
