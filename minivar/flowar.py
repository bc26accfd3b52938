"""FlowAR (Ren et al., ICML 2025): scale-wise autoregression over continuous latents, each scale drawn by flow matching.

VAR (var.py) predicts a scale's *tokens* from a multi-scale residual codebook. FlowAR drops the codebook: scale k is
simply the whole latent of a continuous tokenizer (kl_autoencoder.py) area-downsampled to s_k x s_k, with sides that
double (1, 2, 4, 8 for an 8x8 latent), no residuals:

    Y_k = area_down(latent, s_k)                                     the ground truth of scale k
    input of scale k+1 = area_down(bicubic_up(Y_k, full size), s_{k+1})   what the transformer reads for it

A transformer reads [class token, inputs of scales 2..K] under VAR's block-causal mask and gives one condition
vector z per token; a small flow-matching network (flow_matching.py) then turns noise into the scale's latents given
those conditions. Training: the flow-matching loss of every scale, weighted by s_k^2 / s_K^2 (the number of tokens,
relative to the last scale). Sampling: K transformer passes with a KV cache, each followed by an Euler ODE solve.

As the release (wangqiang9/FlowAR, models/flowar.py): the class embedding is the first token and the AdaLN condition
of every block; an encoder stack and a decoder stack of AdaLN blocks (RMSNorm without weights, GeGLU MLP, q/k/v
biases, VAR's chunk order gamma1, gamma2, scale1, scale2, shift1, shift2), learned absolute positions for each stack
and for the head, 2-D RoPE per scale in one shared coordinate frame; guidance ramps linearly over the scales from 1
to its value and, inside each ODE solve, is applied only while t <= guidance_high (0.9).

Where minivar differs: the frame of the RoPE and the full size of the next-scale input are the latent's (the release
hard-codes 16 and 16 channels, and calls .cuda()); the class table has num_classes + 1 rows (the release always
1001); guidance 1 works (the release crashes there); training uses the posterior mean of the latents (the release
samples from the cached posterior every step); buffer tokens (the release's buffer_size, 0 in its models) are left
out.

    model = build("flowar", FlowARConfig(num_classes=9), tokenizer)      # reads latent_channels and grid
    latents = model.generate(labels, guidance=3.0, steps=25)             # (B, C, 8, 8): tokenizer.decode(latents)
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .flow_matching import FlowARAttention, GeGLU, MLPHead, TransformerHead, euler_sample, flow_matching_loss
from .models import Generator, register
from .sampling import SamplingOptions, compile_switch, option, ramp_over_scales
from .scales import block_causal_mask
from .transformer import AdaLN, ClassEmbedding, KVCache, RMSNorm, modulate, rope_2d


@dataclass
class FlowARConfig:
    latent_channels: int = 0  # the tokenizer's latent channels C (0: read from the tokenizer)
    grid: int = 0  # the tokenizer's latent side (0: read from the tokenizer)
    scales: tuple = ()  # sides of the scales, ending at the grid; empty: 1, 2, 4, ..., grid (FlowAR's doubling)
    num_classes: int = 9
    dim: int = 192  # width of the encoder stack (the release's encoder_embed_dim)
    encoder_depth: int = 2
    decoder_dim: int = 0  # width of the decoder stack; 0 = dim
    decoder_depth: int = 2
    n_head: int = 4  # heads of both stacks (the release's encoder/decoder_num_heads)
    mlp_ratio: float = 4.0
    head: str = "transformer"  # the flow-matching head: "transformer" (FlowAR's) or "mlp" (MAR's, per token)
    head_width: int = 256  # the release's diffloss_w
    head_depth: int = 2  # the release's diffloss_d
    head_cross: bool = False  # FlowAR-L/H's head adds cross-attention to the conditions
    class_dropout: float = 0.1  # label -> null class in training (classifier-free guidance)
    dropout: float = 0.0  # after attention projections and MLPs (the release's proj_dropout)
    attn_dropout: float = 0.0
    rope_frame: float = 0.0  # the shared RoPE coordinate frame; 0: the grid (the release: always 16)
    guidance: float = 3.0  # default guidance at the last scale (ramped from 1 at the first); 1 = none
    guidance_high: float = 0.9  # guidance only while t <= this in each ODE solve (the release: 0.9)
    sample_steps: int = 25  # Euler steps per scale (the release: 25; its time grid makes an odd count one fewer)

    def __post_init__(self):
        self.scales = tuple(self.scales)
        if self.head not in ("transformer", "mlp"):
            raise ValueError(f"head must be 'transformer' or 'mlp', got {self.head!r}")
        for name, width in (("dim", self.dim), ("decoder_dim", self.decoder_dim or self.dim)):
            if width % self.n_head or (width // self.n_head) % 4:
                raise ValueError(f"{name} {width} must be divisible by n_head {self.n_head} into heads of a size "
                                 f"divisible by 4 (2-D RoPE)")
        check_sampler(self.sample_steps, self.guidance_high)
        if self.head == "transformer" and self.head_width % 64 and self.head_width > 64:
            raise ValueError(f"head_width {self.head_width}: the transformer head has heads of 64 channels, "
                             f"use a multiple of 64")

    def scale_list(self) -> tuple:
        if self.scales:
            return self.scales
        if self.grid & (self.grid - 1):
            raise ValueError(f"the latent side {self.grid} is not a power of 2, so it cannot be reached by doubling "
                             f"from 1: set the scales, e.g. --set scales=1,2,3,{self.grid}")
        return tuple(2 ** k for k in range(int(math.log2(self.grid)) + 1))


def check_sampler(sample_steps: int, guidance_high: float):
    """The ODE sampler's settings, in range (the config's defaults and the sampling options alike)."""
    import numbers
    if isinstance(sample_steps, bool) or not isinstance(sample_steps, numbers.Integral) or sample_steps < 1:
        raise ValueError(f"sample_steps must be a whole number >= 1 (Euler steps of each scale's ODE; --sample-steps "
                         f"or --set sample_steps=...), got {sample_steps!r}")
    if isinstance(guidance_high, bool) or not isinstance(guidance_high, numbers.Real) or not 0 <= guidance_high <= 1:
        raise ValueError(f"guidance_high is a time in [0, 1] (1 = guide at every step; --guidance-high or --set "
                         f"guidance_high=...), got {guidance_high!r}")


@dataclass(frozen=True)
class FlowARSampling(SamplingOptions):
    """FlowAR's sampling: guidance ramped over the scales, and each scale's ODE solve."""
    guidance_schedule: str = ramp_over_scales()
    sample_steps: int = option(None, "Euler steps of each scale's ODE solve (default: the model's, 25; FlowAR's "
                                     "time grid makes an odd count one step fewer)")
    guidance_high: float = option(None, "guide only while t <= this in each ODE solve (default: the model's, 0.9; "
                                        "1 = always)")
    heun: bool = option(False, "Heun's second-order steps (two network calls a step, one on the last)")
    compile: bool = compile_switch()

    def check(self):
        super().check()
        check_sampler(self.sample_steps, self.guidance_high)


class FlowARBlock(nn.Module):
    """x + gamma1 * attn(RMSNorm(x) (1 + scale1) + shift1), then the same with the GeGLU MLP; the six vectors from
    the class embedding (AdaLN, one set per sample)."""

    def __init__(self, dim, n_head, mlp_ratio=4.0, dropout=0.0, attn_dropout=0.0):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(dim, 1e-6, affine=False), RMSNorm(dim, 1e-6, affine=False)
        self.attn = FlowARAttention(dim, n_head, qkv_bias=True, dropout=attn_dropout)
        self.mlp = GeGLU(dim, int(dim * mlp_ratio * 2 / 3))
        self.ada_lin = AdaLN(dim, dim, 6)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, cond, rope, mask=None, cache=None):
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(cond)
        x = x + self.drop(self.attn(modulate(self.norm1(x), shift1, scale1), rope, mask=mask, cache=cache)) * gamma1
        return x + self.drop(self.mlp(modulate(self.norm2(x), shift2, scale2))) * gamma2


def next_scale_input(latent_k: torch.Tensor, full: int, s_next: int) -> torch.Tensor:
    """Scale k's latents (B, C, s_k, s_k) -> what the transformer reads for scale k+1: blown up to the full latent
    size (bicubic), then averaged down to the next scale (area). (B, C, s_next, s_next)"""
    up = F.interpolate(latent_k, size=(full, full), mode="bicubic") if latent_k.shape[-1] != full else latent_k
    return F.interpolate(up, size=(s_next, s_next), mode="area")


@register("flowar", FlowARConfig)
class FlowAR(Generator):
    from_tokenizer = ("latent_channels", "grid")
    options_class = FlowARSampling

    def __init__(self, cfg: FlowARConfig):
        super().__init__(cfg)
        self.scales = cfg.scale_list()
        if self.scales[-1] != cfg.grid or list(self.scales) != sorted(set(self.scales)):
            raise ValueError(f"scales must increase and end at the latent side {cfg.grid}, got {self.scales}")
        C, D, Dd, L = cfg.latent_channels, cfg.dim, cfg.decoder_dim or cfg.dim, sum(s * s for s in self.scales)
        self.class_embedding = ClassEmbedding(cfg.num_classes, D, cfg.class_dropout)  # + the null class
        self.z_proj = nn.Linear(C, D)  # next-scale inputs (latent space) -> model width
        self.z_proj_ln = RMSNorm(D, 1e-6)
        self.encoder_pos = nn.Parameter(torch.zeros(1, L, D))
        self.encoder_blocks = nn.ModuleList(FlowARBlock(D, cfg.n_head, cfg.mlp_ratio, cfg.dropout, cfg.attn_dropout)
                                            for _ in range(cfg.encoder_depth))
        self.encoder_norm = RMSNorm(D, 1e-6)
        self.decoder_embed = nn.Linear(D, Dd)
        self.decoder_pos = nn.Parameter(torch.zeros(1, L, Dd))
        self.decoder_blocks = nn.ModuleList(FlowARBlock(Dd, cfg.n_head, cfg.mlp_ratio, cfg.dropout, cfg.attn_dropout)
                                            for _ in range(cfg.decoder_depth))
        self.decoder_norm = RMSNorm(Dd, 1e-6)
        self.head_pos = nn.Parameter(torch.zeros(1, L, Dd))  # the release's diffusion_pos_embed_learned
        frame = cfg.rope_frame or cfg.grid
        if cfg.head == "transformer":
            self.head = TransformerHead(C, Dd, cfg.head_width, cfg.head_depth, cfg.head_cross, rope_frame=frame)
        else:
            self.head = MLPHead(C, Dd, cfg.head_width, cfg.head_depth)
        mask = torch.zeros(L, L).masked_fill(~block_causal_mask(self.scales), float("-inf"))
        self.register_buffer("attn_bias", mask, persistent=False)  # additive: 0 = may attend, -inf = may not
        ropes = [rope_2d(s, s, D // cfg.n_head, frame=frame) for s in self.scales]  # each scale on its own grid
        self.register_buffer("rope", torch.cat(ropes), persistent=False)  # (L, head_dim / 2, 2)
        self.starts = [0] + torch.tensor([s * s for s in self.scales]).cumsum(0).tolist()
        self.init_weights()

    def init_weights(self):
        """The release's init: Xavier-uniform linear weights and zero biases in the stacks, N(0, 0.02) class table
        and positions; the head keeps its own init (flow_matching.init_head)."""
        for m in list(self.encoder_blocks.modules()) + list(self.decoder_blocks.modules()) + \
                [self.z_proj, self.decoder_embed]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for p in (self.class_embedding.weight, self.encoder_pos, self.decoder_pos, self.head_pos):
            nn.init.normal_(p, std=0.02)

    # --- the transformer: one condition vector per token ----------------------------------------------------

    def pyramid(self, latents: torch.Tensor) -> list:
        """Latents (B, C, h, w) -> the ground truth of every scale [(B, C, s_k, s_k)], coarsest first."""
        full = self.cfg.grid
        return [F.interpolate(latents, size=(s, s), mode="area") if s != full else latents for s in self.scales]

    def stacks(self, x, cond, start, end, mask=None, caches=None):
        """The encoder and decoder stacks over positions start..end of the sequence -> conditions (B, end-start, Dd)."""
        rope = self.rope[start:end]
        enc, dec = (caches or (None, None))
        x = self.z_proj_ln(x + self.encoder_pos[:, start:end])
        for i, block in enumerate(self.encoder_blocks):
            x = block(x, cond, rope, mask, enc[i] if enc else None)
        x = self.decoder_embed(self.encoder_norm(x)) + self.decoder_pos[:, start:end]
        for i, block in enumerate(self.decoder_blocks):
            x = block(x, cond, rope, mask, dec[i] if dec else None)
        return self.decoder_norm(x) + self.head_pos[:, start:end]

    def condition(self, latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: latents (B, C, h, w) and labels (B,) -> the condition of every token of every scale,
        (B, L, Dd) with L = sum of s_k^2 (labels are dropped at random in training, never in eval mode)."""
        self.check_latents(latents)
        gt = self.pyramid(latents)
        inputs = [next_scale_input(y, self.cfg.grid, s) for y, s in zip(gt[:-1], self.scales[1:])]
        cond = self.class_embedding(labels)  # (B, D)
        x = torch.cat([cond[:, None], self.z_proj(torch.cat([rearrange(i, "b c h w -> b (h w) c")
                                                             for i in inputs], dim=1))], dim=1)  # (B, L, D)
        return self.stacks(x, cond, 0, self.starts[-1], self.attn_bias)

    def decode_step(self, x, cond, caches):
        """One scale's pass while sampling: its inputs x (B, s*s, D) -> its conditions (B, s*s, Dd), the scale's
        keys and values written after the coarser ones' in the static caches (a scale sees itself and every coarser
        one: no mask). Fixed shapes within a scale: torch.compile makes one graph per scale (option compile)."""
        start = len(caches[0][0])
        return self.stacks(x, cond, start, start + x.shape[1], caches=caches)

    def velocity(self, x_t, t, z):
        """The flow-matching head: x_t (B, N, C) at times t (B,) with conditions z (B, N, Dd) -> velocity (B, N, C)."""
        return self.head(x_t, t, z)

    def check_latents(self, latents):
        C, s = self.cfg.latent_channels, self.cfg.grid
        if latents.ndim != 4 or tuple(latents.shape[1:]) != (C, s, s) or not latents.is_floating_point():
            raise ValueError(f"expected float latents (B, {C}, {s}, {s}) from the tokenizer, got {latents.dtype} "
                             f"{tuple(latents.shape)}")

    # --- training -------------------------------------------------------------------------------------------

    def loss(self, batch, progress: float = 0.0):
        """Flow-matching loss of every scale given the transformer's conditions, weighted by s_k^2 / s_K^2."""
        latents, labels = batch
        z = self.condition(latents, labels)
        losses = []
        for k, y in enumerate(self.pyramid(latents)):
            tokens = rearrange(y, "b c h w -> b (h w) c")
            losses.append(flow_matching_loss(self.head, tokens, z[:, self.starts[k]:self.starts[k + 1]]).mean())
        weights = [s * s / self.scales[-1] ** 2 for s in self.scales]
        loss = sum(w * term for w, term in zip(weights, losses))
        return loss, {"loss_last_scale": losses[-1].detach()}

    # --- generation -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, labels, options=None, *, generator=None, trace=None, **overrides):
        """Sample latents (B, C, h, w) for class labels (B,), one scale per transformer pass (KV cache), each scale
        by an Euler ODE solve of `sample_steps` steps (options: FlowARSampling; default: the config's). Guidance s_k
        ramps from 1 at the first scale to `guidance` at the last (the release's linear cfg schedule;
        guidance_schedule "constant": `guidance` at every scale), applied while t <= guidance_high. A list given as
        `trace` receives {"scale", "guidance", "latent" (B, C, s_k, s_k), "path": [(t, x_t (B, C, s_k, s_k)), ...]}
        for each scale: every scale's latent and the trajectory of its ODE, to look at. compile=True runs every
        scale's pass after the first, and every velocity, through their compiled forms."""
        with self.sampling(labels, options, **overrides) as run:
            B, K, C, full, o = run.batch, len(self.scales), self.cfg.latent_channels, self.cfg.grid, run.options
            if B == 0:  # no labels, no samples (of the right shape)
                return torch.zeros(0, C, full, full, device=self.device)
            guided = run.schedule.guided  # the conditions' second half: the same samples without their class
            cond = self.class_embedding(run.conditions)  # (B or 2B, D)
            caches = self.sampling_caches(lambda fixed: (  # every scale's positions, the encoder's and the decoder's
                [KVCache(self.starts[-1], fixed) for _ in self.encoder_blocks],
                [KVCache(self.starts[-1], fixed) for _ in self.decoder_blocks]), o.compile, len(cond))
            step = self.compiled_step() if o.compile else self.decode_step
            velocity = self.compiled_step("velocity") if o.compile else self.velocity
            x = cond[:, None]
            for k, s in enumerate(self.scales):
                # the first scale allocates the caches (and is one token): never compiled
                z = (step if k else self.decode_step)(x, cond, caches)  # (B or 2B, s*s, Dd)
                noise = torch.randn(z.shape[0], s * s, C, device=z.device, generator=generator)
                s_k = run.schedule.at(k, K)
                points = [] if trace is not None else None
                tokens = euler_sample(velocity, noise, z, o.sample_steps, s_k, o.guidance_high, heun=o.heun,
                                      path=points)
                latent = rearrange(tokens[:B].float(), "b (h w) c -> b c h w", h=s)
                if trace is not None:
                    path = [(t, rearrange(x_t[:B].float(), "b (h w) c -> b c h w", h=s)) for t, x_t in points]
                    trace.append({"scale": k, "guidance": s_k, "latent": latent, "path": path})
                if k < K - 1:
                    x = self.z_proj(rearrange(next_scale_input(latent, full, self.scales[k + 1]),
                                              "b c h w -> b (h w) c"))
                    x = torch.cat([x, x]) if guided else x
        return latent


__all__ = ["FlowARConfig", "FlowAR", "FlowARSampling", "FlowARBlock", "next_scale_input", "check_sampler"]
