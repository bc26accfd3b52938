"""Flow matching on continuous tokens: the straight path from data to noise, the networks that learn its velocity
(the "flow-matching heads"), the loss, and the ODE samplers that walk the path back.

A data point x (one latent token, or a whole scale of them) and a noise sample e ~ N(0, I) are joined by a line

    x_t = (1 - t) x + t e,   t in [0, 1]        (t = 0: data, t = 1: noise; SiT's / FlowAR's "linear" path)

whose velocity dx_t/dt = e - x is the same at every t. A network v(x_t, t, z), given the condition z of the token
(what the autoregressive transformer says about it), learns that velocity by regression:

    loss = || v(x_t, t, z) - (e - x) ||^2,      t ~ U(0, 1), e ~ N(0, I), per sample

and sampling integrates dx/dt = v from t = 1 (pure noise) to t = 0 (a token): Euler steps x <- x + (t' - t) v.
The heads (both follow their papers' code, names included, so official weights load):

- MLPHead: MAR's SimpleMLPAdaLN, one token at a time: residual MLP blocks whose LayerNorms are modulated (AdaLN)
  by time embedding + condition. The simplest flow-matching head.
- TransformerHead: FlowAR's SimpleTransformerAdaLN, a small transformer over all tokens of one scale, so the
  tokens of a scale are denoised together; its AdaLN is per token (time + that token's condition), attention
  uses the scale's 2-D RoPE, and the larger models add cross-attention to the conditions (`cross=True`).

Time enters both through DiT's sinusoidal embedding of t * 1000, rounded down to an integer as FlowAR's code
does ((t * 1000).long()), then an MLP.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .sampling import guidance_mix
from .transformer import RMSNorm, apply_rope, modulate, rope_2d

# ------------------------------------------------------------------------------------------------ time


class TimestepEmbedder(nn.Module):
    """t (B,) -> (B, width): sinusoids of 256 frequencies (DiT / GLIDE), then Linear-SiLU-Linear."""

    def __init__(self, width: int, frequencies: int = 256):
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(nn.Linear(frequencies, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t):
        half = self.frequencies // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


def time_steps(t: torch.Tensor) -> torch.Tensor:
    """Flow time in [0, 1] -> the integer step 0..1000 the heads embed (FlowAR: (t * 1000).long(), rounding down)."""
    return (t * 1000).long()


# ---------------------------------------------------------------------------------------- the MLP head

class MLPResBlock(nn.Module):
    """x + gate * MLP(LN(x) * (1 + scale) + shift), the three vectors from the time + condition embedding."""

    def __init__(self, width: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x, y):
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.in_ln(x), shift, scale))


class FinalLayer(nn.Module):
    """Modulated norm, then a linear map to the token's channels (DiT's final layer)."""

    def __init__(self, width: int, out_channels: int, norm: nn.Module):
        super().__init__()
        self.norm_final = norm
        self.linear = nn.Linear(width, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x, y):
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class MLPHead(nn.Module):
    """MAR's per-token velocity network: v(x_t (..., C), t (B,), z (..., D)) -> (..., C)."""

    def __init__(self, channels: int, cond_dim: int, width: int = 256, depth: int = 3):
        super().__init__()
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(cond_dim, width)
        self.input_proj = nn.Linear(channels, width)
        self.res_blocks = nn.ModuleList(MLPResBlock(width) for _ in range(depth))
        self.final_layer = FinalLayer(width, channels, nn.LayerNorm(width, elementwise_affine=False, eps=1e-6))
        init_head(self)
        for m in [b.adaLN_modulation[-1] for b in self.res_blocks] + [self.final_layer.adaLN_modulation[-1]]:
            nn.init.zeros_(m.weight)  # MAR: every block starts as the identity
            nn.init.zeros_(m.bias)

    def forward(self, x, t, z):
        t_emb = self.time_embed(time_steps(t))  # (B, W)
        y = self.cond_embed(z) + t_emb.view(t_emb.shape[0], *[1] * (z.ndim - 2), -1)  # (..., W)
        x = self.input_proj(x)
        for block in self.res_blocks:
            x = block(x, y)
        return self.final_layer(x, y)


# -------------------------------------------------------------------------------- the transformer head

class FlowARAttention(nn.Module):
    """Multi-head attention with 2-D RoPE on queries and keys; keys/values from `context` if given (cross)."""

    def __init__(self, dim: int, n_head: int, qkv_bias: bool = False, context_dim: int = 0, dropout: float = 0.0):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        if context_dim:  # cross-attention: queries from x, keys and values from the condition
            self.q, self.kv = nn.Linear(dim, dim, bias=qkv_bias), nn.Linear(context_dim, 2 * dim, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, rope, context=None, mask=None, cache=None):
        """x (B, L, dim); rope (L, head_dim/2, 2); mask additive (L, L_total) or None; cache a KVCache."""
        if context is None:
            q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b l h d", three=3, h=self.n_head)
        else:
            q = rearrange(self.q(x), "b l (h d) -> b l h d", h=self.n_head)
            k, v = rearrange(self.kv(context), "b l (two h d) -> two b l h d", two=2, h=self.n_head)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        q, k, v = (rearrange(t, "b l h d -> b h l d") for t in (q, k, v))
        if cache is not None:
            k, v = cache.append(k, v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(rearrange(y, "b h l d -> b l (h d)"))


class GeGLU(nn.Module):
    """timm's SwiGLU with a GELU gate, as FlowAR builds it: fc2(gelu(fc1_g x) * fc1_x x), biases on."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1_g, self.fc1_x, self.fc2 = nn.Linear(dim, hidden), nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1_g(x)) * self.fc1_x(x))


class HeadBlock(nn.Module):
    """FlowAR's head block. Without cross-attention (Block_v1): per-token AdaLN from SiLU(t + c) modulates and gates
    attention and MLP. With it (Block_v2): the attention's AdaLN comes from t alone, the MLP's from t + c, and a
    cross-attention to the (normalised) conditions sits between them."""

    def __init__(self, width: int, cond_dim: int, cross: bool, mlp_ratio: float = 4.0):
        super().__init__()
        self.cross, self.width = cross, width
        self.norm1 = RMSNorm(width, 1e-6, affine=False)
        self.attn = FlowARAttention(width, max(1, width // 64))
        if cross:
            self.crossattn = FlowARAttention(width, max(1, width // 64), context_dim=cond_dim)
            self.norm2_1, self.norm2_2 = RMSNorm(width, 1e-6), RMSNorm(cond_dim, 1e-6)
            self.norm3 = RMSNorm(width, 1e-6, affine=False)
            self.ada_lin_attn, self.ada_lin_mlp = nn.Linear(width, 3 * width), nn.Linear(width, 3 * width)
        else:
            self.norm2 = RMSNorm(width, 1e-6, affine=False)
            self.ada_lin = nn.Linear(width, 6 * width)
        self.mlp = GeGLU(width, int(width * mlp_ratio * 2 / 3))

    def forward(self, x, t, c, z, rope):
        """x (B, N, W); t (B, 1, W) the time embedding; c (B, N, W) the embedded condition; z (B, N, D) raw."""
        if not self.cross:
            g1, g2, s1, s2, b1, b2 = rearrange(self.ada_lin(F.silu(t + c)), "b n (six w) -> six b n w", six=6)
            x = x + self.attn(modulate(self.norm1(x), b1, s1), rope) * g1
            return x + self.mlp(modulate(self.norm2(x), b2, s2)) * g2
        g1, s1, b1 = rearrange(self.ada_lin_attn(F.silu(t)), "b n (three w) -> three b n w", three=3)
        g2, s2, b2 = rearrange(self.ada_lin_mlp(F.silu(c + t)), "b n (three w) -> three b n w", three=3)
        x = x + self.attn(modulate(self.norm1(x), b1, s1), rope) * g1
        x = x + self.crossattn(self.norm2_1(x), rope, context=self.norm2_2(z))
        return x + self.mlp(modulate(self.norm3(x), b2, s2)) * g2


class TransformerHead(nn.Module):
    """FlowAR's velocity network over the N = s * s tokens of one scale: v(x_t (B, N, C), t (B,), z (B, N, D))."""

    def __init__(self, channels: int, cond_dim: int, width: int = 256, depth: int = 2, cross: bool = False,
                 rope_frame: float = 16.0):
        super().__init__()
        self.width, self.rope_frame = width, rope_frame
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(cond_dim, width)
        self.input_proj = nn.Linear(channels, width)
        self.res_blocks = nn.ModuleList(HeadBlock(width, cond_dim, cross) for _ in range(depth))
        self.final_layer = FinalLayer(width, channels, RMSNorm(width, 1e-6, affine=False))
        init_head(self)  # (FlowAR's code announces zeroed AdaLN layers but leaves them as initialised: so do we)

    def forward(self, x, t, z):
        B, N, _ = x.shape
        side = math.isqrt(N)
        head_dim = self.width // max(1, self.width // 64)
        rope = rope_2d(side, side, head_dim, frame=self.rope_frame).to(x.device)  # the scale's grid
        t = self.time_embed(time_steps(t))[:, None]  # (B, 1, W)
        c = self.cond_embed(z)
        x = self.input_proj(x)
        for block in self.res_blocks:
            x = block(x, t, c, z, rope)
        return self.final_layer(x, c + t)


def init_head(head: nn.Module):
    """Both papers' init: Xavier-uniform linear weights, zero biases, N(0, 0.02) time MLP, a zero output layer (the
    head starts by predicting velocity 0)."""
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias) if m.bias is not None else None
    nn.init.normal_(head.time_embed.mlp[0].weight, std=0.02)
    nn.init.normal_(head.time_embed.mlp[2].weight, std=0.02)
    nn.init.zeros_(head.final_layer.linear.weight)
    nn.init.zeros_(head.final_layer.linear.bias)


# ------------------------------------------------------------------------------------ loss and sampling

def flow_matching_loss(head, x, z, t=None, noise=None) -> torch.Tensor:
    """Per-sample loss (B,) of the velocity network on clean tokens x (B, ..., C) with conditions z:
    x_t = (1 - t) x + t e, target e - x, t ~ U(0, 1) per sample (FlowAR's SILoss, linear path, v-prediction)."""
    t = torch.rand(x.shape[0], device=x.device, dtype=x.dtype) if t is None else t
    noise = torch.randn_like(x) if noise is None else noise
    t_ = t.view(-1, *[1] * (x.ndim - 1))
    x_t = (1 - t_) * x + t_ * noise
    return (head(x_t, t, z) - (noise - x)).pow(2).flatten(1).mean(1)


def time_grid(num_steps: int) -> torch.Tensor:
    """FlowAR's float64 grid from t = 1 to 0: half the steps stretch over [1, 0.3], the other half refine [0.25, 0]
    (coarse structure first, details last); exactly 50 steps are uniform. (The release's two halves hold
    num_steps // 2 and num_steps // 2 + 1 points, so an odd count makes one step fewer; kept, for its numbers. Fewer
    than 2 steps, where its grid would have no step at all, are uniform here.)"""
    if num_steps < 1:
        raise ValueError(f"the sampler needs at least 1 step (num_steps, --steps), got {num_steps}")
    if num_steps == 50 or num_steps < 2:
        return torch.linspace(1, 0, num_steps + 1, dtype=torch.float64)
    return torch.cat([torch.linspace(1, 0.3, num_steps // 2, dtype=torch.float64),
                      torch.linspace(0.25, 0, num_steps // 2 + 1, dtype=torch.float64)])


def guided_velocity(velocity_fn, x, t, z, guidance=1.0, guided=True, dtype=torch.float32):
    """The velocity at time t of the states x (2B rows with guidance: conditional half, then the unconditional one),
    in float64 (the network runs in `dtype`). Guided: the conditional half is fed twice (once with each half of z)
    and the two velocities mixed uncond + s (cond - uncond), for both halves; unguided: every row its own."""
    half = x.shape[0] // 2
    x_in = torch.cat([x[:half], x[:half]]) if guided else x
    times = torch.full((x.shape[0],), float(t), dtype=torch.float64, device=x.device)
    v = velocity_fn(x_in.to(dtype), times.to(dtype), None if z is None else z.to(dtype)).to(torch.float64)
    if not guided:
        return v
    cond, uncond = v.chunk(2)
    return torch.cat([guidance_mix(cond, uncond, guidance)] * 2)


@torch.no_grad()
def euler_sample(velocity_fn, noise, z, num_steps=25, guidance=1.0, guidance_high=1.0, guidance_low=0.0,
                 heun=False, path=None):
    """Integrate dx/dt = velocity_fn(x, t, z) from t = 1 (noise) to t = 0 in float64 on time_grid(num_steps).

    Guidance (guidance = s != 1) needs the (2B) layout of FlowAR's sampler: the first B rows of noise and z are the
    conditional half, the last B the same samples without their class. While guidance_low <= t <= guidance_high the
    velocities are mixed (guided_velocity); outside that interval (FlowAR: t > 0.9, the first, noisiest steps) both
    halves follow their own velocity, unguided. heun=True adds Heun's correction (a second velocity at the step's
    end, averaged with the first; not on the last step, which ends at t = 0): twice the network calls, a
    second-order error. Returns x at t = 0 (float64, noise's shape). (The release mixes only for s > 1; s < 1,
    towards the unconditional model, works here too.) A list given as `path` receives (t, x_t) at every point of
    the grid: the trajectory, to look at.
    """
    grid, dtype = time_grid(num_steps), noise.dtype
    x = noise.to(torch.float64)

    for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        if path is not None:
            path.append((float(t), x.clone()))
        guided = guidance != 1.0 and guidance_low <= t <= guidance_high  # decided at the step's start, for both
        d = guided_velocity(velocity_fn, x, t, z, guidance, guided, dtype)  # of Heun's velocities (as the release)
        x_next = x + (t_next - t) * d
        if heun and i < len(grid) - 2:
            x_next = x + (t_next - t) * 0.5 * (d + guided_velocity(velocity_fn, x_next, t_next, z, guidance, guided,
                                                                   dtype))
        x = x_next
    if path is not None:
        path.append((0.0, x.clone()))
    return x


__all__ = ["TimestepEmbedder", "MLPHead", "TransformerHead", "flow_matching_loss", "time_grid", "euler_sample",
           "guided_velocity", "time_steps"]
