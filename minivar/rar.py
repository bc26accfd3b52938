"""Randomized autoregression (RAR, Yu et al. 2024, arXiv 2411.00776): a plain causal GPT trained on token orders
that start random and anneal to raster.

Raster order (raster_ar.py) lets token i see only the tokens above it and to its left. RAR keeps a plain causal
transformer and raster-order sampling, but trains on shuffled sequences: with probability r a sample's N tokens are
fed in a random permutation, otherwise in raster order. Early in training r = 1, so every token learns to be
predicted from context on every side; r then falls linearly to 0 between `anneal_start` and `anneal_end` (fractions
of the run), so the model ends as a raster model that has seen bidirectional context.

    r(progress) = 1                                                   progress < anneal_start
                  1 - (progress - anneal_start) / (anneal_end - anneal_start)   in between
                  0                                                   progress > anneal_end

A random order poses a problem a raster model never has: the input at slot k says which token it *is* (its own
position), but not which token the model must predict *next* — in raster order that is always the next cell, in a
random order it could be any cell not yet seen. RAR's target-aware positional embedding adds a second learned
position to each input, that of the token it must predict:

    slot:      [cls]   [class]          t_o(0)           t_o(1)    ...   t_o(N-1)
    position   pos 0   pos 1            pos o(0)         pos o(1)        pos o(N-1)
    target     -       target o(0)      target o(1)      target o(2)     -          (the last predicts nothing)
    predicts   -       t_o(0)           t_o(1)           t_o(2)          -

As the release (bytedance/1d-tokenizer, modeling/rar.py): one embedding table for the image tokens, the classes and
the null class; a learned cls token and the class token as a prefix; adaLN-Zero blocks (LayerNorm, QK-norm
attention with biases, GELU MLP) conditioned per slot on the class embedding plus a learned per-slot ("time step")
embedding; a final adaLN before the head; causal mask; KV cache. Sampling goes in raster order, guidance following
the release's schedule s_t = 1 + (s - 1) (1 - cos(pi (t / N)^power)) / 2 (power 0: constant s).
Where minivar differs: the table has no row for the mask token (the release keeps one from MaskGIT; RAR never
reads it); the position tables have the sequence's length (the release's have 1024 spare rows, its step table 100);
training feeds N + 1 slots, not N + 2 (the last token predicts nothing, and the mask is causal, so the logits are the
same); guidance 0 is the unconditional model, as for every minivar generator (the release's 0 means no guidance).
The release computes the guidance schedule in float32, minivar in float64: a sampled token can differ when a draw
falls within rounding of a boundary (the fixtures' tokens are identical).

    model = build("rar", RARConfig(num_classes=9), tokenizer)          # reads codebook_size and grid
    logits = model(tokens, labels, orders)       # (B, N, V): logits[:, k] predicts tokens[b, orders[b, k]]
    maps = model.generate(labels, guidance=2.0)  # (B, grid, grid), raster order with a KV cache
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .models import Generator, register
from .sampling import CompiledTokens, guidance_mix, option, raise_if_nonfinite, sample
from .transformer import AdaLN, KVCache, causal_mask, init_weights, modulate, one_query_attention


@dataclass
class RARConfig:
    renamed = {"vocab_size": "codebook_size"}  # fields of checkpoints from an older minivar, old -> new (models.py)

    codebook_size: int = 0  # the tokenizer's codebook size (0: read from the tokenizer)
    grid: int = 0  # token map side (0: read from the tokenizer)
    num_classes: int = 9
    dim: int = 192  # the release's hidden_size (RAR-B: 768)
    n_layer: int = 6  # num_hidden_layers (RAR-B: 24)
    n_head: int = 6  # num_attention_heads (RAR-B: 16)
    mlp_ratio: float = 4.0  # intermediate_size / hidden_size
    class_dropout: float = 0.1  # label -> null class in training (classifier-free guidance)
    dropout: float = 0.1  # after the attention projection and in the MLP (the release's dropout)
    attn_dropout: float = 0.1  # on the attention weights (attn_drop)
    anneal_start: float = 0.5  # fraction of the run at which the random-order ratio starts falling from 1 ...
    anneal_end: float = 0.75  # ... and reaches 0 (RAR-B: epochs 200 and 300 of 400)
    target_aware: bool = True  # add the position of the token each slot predicts (False: the ablation)
    guidance: float = 2.0  # default classifier-free guidance at the last step (1 = none)
    guidance_power: float = 1.0  # the schedule's power (0 = constant guidance; RAR-B samples with 2.75)

    def __post_init__(self):
        if self.dim % self.n_head:
            raise ValueError(f"dim {self.dim} must be divisible by n_head {self.n_head}")
        if not 0 <= self.anneal_start <= self.anneal_end <= 1:
            raise ValueError(f"the anneal window must satisfy 0 <= anneal_start <= anneal_end <= 1 (fractions of the "
                             f"run), got {self.anneal_start} and {self.anneal_end}")
        if self.guidance_power < 0:
            raise ValueError(f"guidance_power must be >= 0 (0 = constant guidance), got {self.guidance_power}")

    @property
    def seq_len(self) -> int:  # tokens per image
        return self.grid * self.grid


# ------------------------------------------------------------------------------------------------- orders

def random_order_ratio(progress: float, anneal_start: float, anneal_end: float) -> float:
    """The probability r that a training sample is fed in a random order, at `progress` in [0, 1] of the run.

    1 before anneal_start, falling linearly to 0 at anneal_end, 0 after. A window of width 0 is a step (the
    release's formula divides by zero there): anneal_start = anneal_end = 1 trains on random orders throughout,
    0 = 0 on raster order throughout."""
    if progress < anneal_start:
        return 1.0
    if progress >= anneal_end:
        return 0.0
    return 1.0 - (progress - anneal_start) / (anneal_end - anneal_start)


def sample_orders(batch: int, n: int, ratio: float, device=None, generator=None) -> torch.Tensor:
    """(batch, n) token orders: each row a uniformly random permutation of 0..n-1 with probability `ratio`,
    else raster order 0, 1, ..., n-1."""
    raster = torch.arange(n, device=device).expand(batch, n)
    if ratio <= 0:
        return raster.clone()
    shuffled = torch.rand(batch, n, device=device, generator=generator).argsort(dim=1)  # a permutation per row
    coin = torch.rand(batch, 1, device=device, generator=generator) < ratio
    return torch.where(coin, shuffled, raster)


def slot_positions(orders: torch.Tensor):
    """orders (B, N) -> (positions, targets), each (B, N + 2): for every input slot of the sequence
    [cls, class, t_o(0), ..., t_o(N-1)], the row of the position table it reads and the grid position of the token
    it must predict (-1: none).

        positions  0, 1, 2 + o(0), 2 + o(1), ..., 2 + o(N-1)      (rows 0 and 1: the cls and class slots)
        targets   -1, o(0), o(1),  o(2),     ..., -1              (the class slot predicts the first token)
    """
    B, N = orders.shape
    pre = torch.arange(2, device=orders.device).expand(B, 2)
    none = torch.full((B, 1), -1, dtype=orders.dtype, device=orders.device)
    return torch.cat([pre, orders + 2], dim=1), torch.cat([none, orders, none], dim=1)


# ------------------------------------------------------------------------------------------------- blocks

class RARAttention(nn.Module):
    """Multi-head causal self-attention with q/k/v biases and QK-norm (a LayerNorm over each head's queries and
    keys: bounded logits, stable training at large width), and an optional KV cache."""

    def __init__(self, dim, n_head, attn_dropout=0.0, dropout=0.0):
        super().__init__()
        self.n_head, self.head_dim = n_head, dim // n_head
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.proj = nn.Linear(dim, dim)
        self.attn_dropout, self.drop = attn_dropout, nn.Dropout(dropout)

    def forward(self, x, cache: KVCache = None, positions=None, mask=None):
        """With `positions` the cache is written there and read whole, `mask` hiding what is not written yet (a
        fixed-shape step, RAR.decode_step); else causal over the cached slots and x's."""
        B, L, C = x.shape  # plain views, not einops: fewer guards for the compiled step (transformer.py says why)
        q, k, v = self.qkv(x).view(B, L, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, D)
        q, k = self.q_norm(q), self.k_norm(k)
        n_past = 0
        if cache is not None and positions is not None:
            k, v = cache.write(positions, k, v)
        elif cache is not None:
            n_past = len(cache)
            k, v = cache.append(k, v)
        if mask is None:
            mask = causal_mask(x.shape[1], n_past, x.device)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, L, C)))  # (B, L, H * D)


class MLP(nn.Module):
    def __init__(self, dim, hidden, dropout=0.0):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class RARBlock(nn.Module):
    """adaLN-Zero (DiT): x + gate * attn(LN(x) (1 + scale) + shift), then the same with the MLP; the six vectors
    come from each slot's own condition (class + step embedding), and start at zero, so each block starts as the
    identity."""

    def __init__(self, cfg: RARConfig):
        super().__init__()
        D = cfg.dim
        self.norm1, self.norm2 = nn.LayerNorm(D, eps=1e-6), nn.LayerNorm(D, eps=1e-6)
        self.attn = RARAttention(D, cfg.n_head, cfg.attn_dropout, cfg.dropout)
        self.mlp = MLP(D, int(D * cfg.mlp_ratio), cfg.dropout)
        self.ada = AdaLN(D, D, 6)

    def forward(self, x, cond, cache=None, positions=None, mask=None):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(cond)  # (the release's chunk order)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), cache, positions, mask)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


# -------------------------------------------------------------------------------------------------- model

@dataclass(frozen=True)
class RARSampling(CompiledTokens):
    """RAR's sampling: token sampling whose guidance rises over the tokens along the release's cosine schedule."""
    guidance_schedule: str = option("cosine", "how s moves over the tokens: cosine (the release's, with "
                                              "--guidance-power), linear, or constant")
    guidance_power: float = option(None, "the cosine schedule's power: s_t = 1 + (s - 1)(1 - cos(pi (t/N)^power)) "
                                         "/ 2 (default: the model's; 0 = constant s; RAR-B samples with 2.75)")


@register("rar", RARConfig)
class RAR(Generator):
    options_class = RARSampling

    def __init__(self, cfg: RARConfig):
        super().__init__(cfg)
        D, V, N = cfg.dim, cfg.codebook_size, cfg.seq_len
        # one table: rows 0..V-1 the image tokens, then the classes, then the null class
        self.embeddings = nn.Embedding(V + cfg.num_classes + 1, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos = nn.Parameter(torch.zeros(1, N + 2, D))  # slot positions: cls, class, then grid positions 0..N-1
        if cfg.target_aware:  # "the token I must predict sits at grid position p" (absent in the ablation)
            self.target_pos = nn.Parameter(torch.zeros(1, N, D))
        self.step_embed = nn.Parameter(torch.zeros(1, N + 2, D))  # per slot, added to the class for the adaLN
        self.blocks = nn.ModuleList(RARBlock(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.LayerNorm(D, eps=1e-6, elementwise_affine=False)
        self.head_ada = AdaLN(D, D, 2)  # (scale, shift) of the final norm
        self.head = nn.Linear(D, V)
        self.init_weights()

    def init_weights(self):
        """The release's: truncated N(0, 0.02) for linear weights, the table and the position tables, zero biases,
        zero cls token, and zero adaLN projections (adaLN-Zero: every block and the final norm start plain)."""
        init_weights(self, std=0.02, truncated=True)
        with torch.no_grad():
            for p in (self.pos, self.step_embed) + ((self.target_pos,) if self.cfg.target_aware else ()):
                nn.init.trunc_normal_(p, std=0.02)
            for ada in [b.ada for b in self.blocks] + [self.head_ada]:
                ada.linear.weight.zero_()
                ada.linear.bias.zero_()

    def no_weight_decay(self) -> set:
        """The release's optimizer decays no parameter whose name holds "embed", "embedding" or "ln": the table,
        the three position tables, and (the substring "ln" of adaln_before_head) the final adaLN projection."""
        names = {"embeddings.weight", "pos", "step_embed", "head_ada.linear.weight"}
        return names | ({"target_pos"} if self.cfg.target_aware else set())

    @property
    def null_class(self) -> int:
        return self.cfg.num_classes

    def class_ids(self, labels):
        """Class labels (the null class = num_classes) -> rows of the embedding table; in training each label
        becomes the null class with probability class_dropout."""
        if self.training and self.cfg.class_dropout > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.cfg.class_dropout
            labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
        return labels + self.cfg.codebook_size

    def check_inputs(self, tokens, labels, orders):
        B, N, V = tokens.shape[0], self.cfg.seq_len, self.cfg.codebook_size
        if tokens.dtype != torch.long or tokens.ndim != 2 or tokens.shape[1] != N:
            raise ValueError(f"expected tokens as a LongTensor (B, {N}) in raster order (flatten token maps with "
                             f".flatten(1)), got {tokens.dtype} {tuple(tokens.shape)}")
        if labels.dtype != torch.long or labels.shape != (B,):
            raise ValueError(f"expected labels as a LongTensor ({B},), got {labels.dtype} {tuple(labels.shape)}")
        if orders.dtype != torch.long or orders.shape != tokens.shape:
            raise ValueError(f"expected orders as a LongTensor {tuple(tokens.shape)}: a permutation of 0..{N - 1} "
                             f"per row (rar.sample_orders makes them), got {orders.dtype} {tuple(orders.shape)}")
        if tokens.numel() and not (tokens.is_cuda and self.training) and (tokens.min() < 0 or tokens.max() >= V):
            # (skipped for CUDA training batches: reading values would make the CPU wait for the GPU at every step;
            # the token cache's codes come from the tokenizer, in range by construction)
            raise ValueError(f"tokens must lie in [0, {V}) (the tokenizer's codebook), got "
                             f"[{tokens.min().item()}, {tokens.max().item()}]")
        if tokens.is_cuda and self.training:
            return  # labels and orders come from the dataset and sample_orders in training
        if labels.numel() and (labels.min() < 0 or labels.max() > self.null_class):
            raise ValueError(f"labels must lie in [0, {self.cfg.num_classes}] ({self.cfg.num_classes} = null class)")
        if not torch.equal(orders.sort(dim=1).values, torch.arange(N, device=orders.device).expand_as(orders)):
            raise ValueError(f"every row of orders must be a permutation of 0..{N - 1} (each grid position once)")

    def inputs(self, fed, orders, ids):
        """The input slots of a sequence that has fed the tokens `fed` (B, T), T < N, in the order `orders`
        (B, N), for the class rows `ids` (B,) -> x (B, T + 2, D) and each slot's adaLN condition (B, T + 2, D)."""
        B, T = fed.shape
        positions, targets = slot_positions(orders)
        positions, targets = positions[:, :T + 2], targets[:, :T + 2]
        x = torch.cat([self.cls_token.expand(B, 1, -1), self.embeddings(ids)[:, None], self.embeddings(fed)], dim=1)
        # (F.embedding rather than indexing: its backward adds up repeated rows in a fixed order, so a resumed run
        # equals an uninterrupted one bit for bit)
        x = x + F.embedding(positions, self.pos[0])  # where each slot's token sits
        if self.cfg.target_aware:  # where the token it must predict sits (nothing for cls and the last token)
            x = x + torch.where(targets[..., None] >= 0, F.embedding(targets.clamp_min(0), self.target_pos[0]), 0.0)
        cond = self.embeddings(ids)[:, None] + self.step_embed[:, :T + 2]  # the class, made distinct per slot
        return x, cond

    def transform(self, x, cond, caches=None, with_cls=True):
        """The blocks and the head on input slots -> logits (B, L, V); the cls slot's output is dropped."""
        for i, block in enumerate(self.blocks):
            x = block(x, cond, caches[i] if caches is not None else None)
        if with_cls:
            x, cond = x[:, 1:], cond[:, 1:]  # the cls slot predicts nothing
        return self.logits(x, cond)

    def logits(self, x, cond):
        """The head: the final adaLN (from each slot's condition) and the projection to the vocabulary."""
        scale, shift = self.head_ada(cond)
        return self.head(modulate(self.norm(x), shift, scale)).float()

    def decode_step(self, token, slot, caches, orders, ids):
        """The token fed at input slot `slot` (a 0-dim long tensor; slot 2 + j holds the j-th fed token) -> the
        logits (B, V) of the next token in the order, with the same shapes at every slot: what torch.compile can
        turn into one graph (sampling option compile). The slot's input and condition are those `inputs` builds
        for it; every block writes its key and value at the slot in its static cache and attends over the whole
        buffer, the slots after it masked."""
        index = slot.view(1)
        positions, targets = (t.index_select(1, index) for t in slot_positions(orders))  # (B, 1) each
        x = self.embeddings(token) + F.embedding(positions, self.pos[0])
        if self.cfg.target_aware:
            x = x + torch.where(targets[..., None] >= 0, F.embedding(targets.clamp_min(0), self.target_pos[0]), 0.0)
        cond = self.embeddings(ids)[:, None] + self.step_embed.index_select(1, index)
        mask = caches[0].filled_through(slot).view(1, 1, 1, -1)  # broadcast over the batch, heads and the query
        with one_query_attention():
            for block, cache in zip(self.blocks, caches):
                x = block(x, cond, cache, index, mask)
        return self.logits(x, cond)[:, -1]

    def forward(self, tokens, labels, orders=None):
        """tokens (B, N) raster order, labels (B,) (null = num_classes), orders (B, N) (default: raster)
        -> logits (B, N, V); logits[:, k] predicts tokens[b, orders[b, k]] from the class and tokens
        orders[b, :k]. (The release's forward_fn on its first N outputs; labels dropped at random in training.)"""
        if orders is None:
            orders = torch.arange(tokens.shape[-1], device=tokens.device).expand(tokens.shape)
        orders = orders.to(tokens.device)
        self.check_inputs(tokens, labels, orders)
        fed = tokens.gather(1, orders)[:, :-1]  # in order; the last token is never an input (it predicts nothing)
        return self.transform(*self.inputs(fed, orders, self.class_ids(labels)))

    def loss(self, batch, progress: float = 0.0):
        """Mean cross-entropy over the N tokens, fed in a random order with probability r(progress) (raster in
        eval mode, the order sampling uses)."""
        tokens, labels = batch
        tokens = tokens.flatten(1)
        B, N = tokens.shape
        ratio = random_order_ratio(progress, self.cfg.anneal_start, self.cfg.anneal_end) if self.training else 0.0
        orders = sample_orders(B, N, ratio, tokens.device)
        logits = self(tokens, labels, orders)
        loss = F.cross_entropy(logits.flatten(0, 1), tokens.gather(1, orders).flatten())
        return loss, {"bits_per_token": loss.detach() / math.log(2),
                      "random_ratio": torch.tensor(ratio)}

    @torch.no_grad()
    def evaluate(self, loader, max_batches=None) -> dict:
        """The test loss in raster order ("loss", what sampling uses) and in random orders ("loss_random")."""
        result = super().evaluate(loader, max_batches)
        was_training = self.training
        self.eval()
        total, count = 0.0, 0
        gen = torch.Generator(device=self.device).manual_seed(0)  # the same orders at every evaluation
        for i, (x, labels) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, labels = x.to(self.device).flatten(1), labels.to(self.device)
            orders = sample_orders(x.shape[0], x.shape[1], 1.0, self.device, gen)
            logits = self(x, labels, orders)
            loss = F.cross_entropy(logits.flatten(0, 1), x.gather(1, orders).flatten())
            total, count = total + loss.float() * len(x), count + len(x)
        self.train(was_training)
        return {**result, "loss_random": (total / max(1, count)).item()}

    @torch.no_grad()
    def generate(self, labels, options=None, *, generator=None, trace=None, orders=None, given=None, **overrides):
        """Sample token maps (B, grid, grid), one token per step, with a KV cache.

        Options: RARSampling (overrides such as guidance=3.0, guidance_power=2.75). The order is raster unless
        `orders` (B, N) is given. Guidance s (default: the config's) != 1 runs the batch twice, with the labels and
        with the null class, and mixes uncond + s_t (cond - uncond), s_t moving from 1 to s along the release's cosine
        schedule (`sampling.cosine_ramp`, power guidance_power); s = 0 is the unconditional model at every step (the
        contract's meaning; the release's 0 means no guidance, minivar's 1). `given` (B, N) (or maps (B, grid, grid))
        of integers fixes the tokens at its entries >= 0 (completion; -1 = to sample): they are fed first, in the
        order `orders` lists them, and the rest is sampled in the order's remaining positions. use_cache=False
        recomputes the sequence every step (slow; the reference the cache must match); compile=True runs every step
        after the first through the compiled decode_step. A list given as `trace`
        receives {"step", "guidance", "logits" (B, V), "tokens" (B,)} for each sampled token.
        """
        with self.sampling(labels, options, **overrides) as run:  # everything is checked before the first step
            B, N, dev, o = run.batch, self.cfg.seq_len, self.device, run.options
            orders = self.check_orders(orders, B) if orders is not None else torch.arange(N, device=dev).expand(B, N)
            n_given = 0
            if given is not None:
                given, orders, n_given = self.given_first(given, orders)
            guided = run.schedule.guided  # the conditions' second half: the same sequences without their class
            ids = run.conditions + self.cfg.codebook_size
            orders2 = torch.cat([orders, orders]) if guided else orders
            both = (lambda t: torch.cat([t, t])) if guided else (lambda t: t)  # a batch fed with both conditions
            fed = torch.zeros(B, N, dtype=torch.long, device=dev)  # the tokens in the order they are fed, in place
            if n_given:
                fed[:, :n_given] = given.to(dev).long().gather(1, orders[:, :n_given])
            slots = N + 1  # cls, class and the N - 1 tokens fed before the last is drawn
            step = self.compiled_step() if o.compile else None
            caches = self.sampling_caches(lambda fixed: [KVCache(slots, fixed) for _ in self.blocks], o.compile,
                                          len(ids)) if o.use_cache or o.compile else None
            slot_index = torch.arange(slots, device=dev)
            token = torch.empty(len(ids), 1, dtype=torch.long, device=dev)  # the compiled step's input, in place
            nonfinite = torch.zeros((), dtype=torch.bool, device=dev)  # checked once, after the loop
            n_past = 0  # slots in the caches
            for t in range(n_given, N):  # no allocation and no wait for the GPU on the compiled path
                if step is not None and n_past:  # after the first step: one slot, fixed shapes (the token a tensor
                    # of its own: a view into `fed` would move every step, and dynamo would compile again)
                    token.view(-1, B).copy_(fed[:, t - 1].expand(len(ids) // B, B))
                    logits = step(token, slot_index[n_past], caches, orders2, ids)
                    n_past += 1
                else:
                    x, cond = self.inputs(both(fed[:, :t]), orders2, ids)
                    if caches is not None:
                        logits = self.transform(x[:, n_past:], cond[:, n_past:], caches, with_cls=n_past == 0)[:, -1]
                        n_past = x.shape[1]
                    else:
                        logits = self.transform(x, cond)[:, -1]
                s_t = run.schedule.at(t, N)
                if guided:
                    logits = guidance_mix(logits[:B], logits[B:], s_t)
                nxt = sample(logits, o.temperature, o.top_k, o.top_p, generator, nonfinite)
                if trace is not None:
                    trace.append({"step": t, "guidance": s_t, "logits": logits, "tokens": nxt})
                fed[:, t] = nxt
            raise_if_nonfinite(nonfinite, o.temperature)
        maps = torch.empty_like(fed).scatter_(1, orders, fed)  # back from the order to raster positions
        return maps.view(B, self.cfg.grid, self.cfg.grid)

    def check_orders(self, orders, batch):
        N = self.cfg.seq_len
        orders = torch.as_tensor(orders, device=self.device)
        if orders.ndim == 1:
            orders = orders.expand(batch, -1)
        if orders.is_floating_point() or orders.dtype == torch.bool or orders.shape != (batch, N):
            raise ValueError(f"orders must be integers of shape ({batch}, {N}) (or ({N},) for all), one permutation "
                             f"of 0..{N - 1} per row, got {orders.dtype} {tuple(orders.shape)}")
        orders = orders.long()
        if not torch.equal(
                orders.sort(dim=1).values, torch.arange(N, device=orders.device).expand(batch, N)):
            raise ValueError(f"orders must be a LongTensor ({batch}, {N}) (or ({N},) for all) whose rows are "
                             f"permutations of 0..{N - 1}, got {orders.dtype} {tuple(orders.shape)}")
        return orders

    def given_first(self, given, orders):
        """Reorder each row of `orders` so the positions with a given token (given >= 0) come first, each group
        keeping its relative order. -> (given as (B, N), orders, number given); every row must give the same number
        of tokens."""
        B, N = orders.shape
        given = torch.as_tensor(given, device=self.device)
        if given.shape == (B, self.cfg.grid, self.cfg.grid):
            given = given.flatten(1)
        if given.is_floating_point() or given.dtype == torch.bool or given.shape != (B, N):
            raise ValueError(f"given must be a LongTensor ({B}, {N}) (or maps ({B}, {self.cfg.grid}, "
                             f"{self.cfg.grid})) of tokens, -1 where the model samples; got {given.dtype} "
                             f"{tuple(given.shape)}")
        given = given.long()
        if given.numel() and (given.min() < -1 or given.max() >= self.cfg.codebook_size):
            raise ValueError(f"given holds tokens in [0, {self.cfg.codebook_size}) and -1 where the model samples; "
                             f"got values in [{int(given.min())}, {int(given.max())}]")
        known = given.gather(1, orders) >= 0  # (B, N) in order
        counts = known.sum(1)
        if B and (counts != counts[0]).any():
            raise ValueError(f"every row of given must fix the same number of tokens, got {counts.tolist()}")
        rank = (~known).long() * N + torch.arange(N, device=orders.device)  # given first, stable
        return given, orders.gather(1, rank.argsort(dim=1)), int(counts[0]) if B else 0


__all__ = ["RARConfig", "RAR", "RARSampling", "random_order_ratio", "sample_orders", "slot_positions"]
