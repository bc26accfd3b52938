"""Turning logits into tokens: temperature, top-k, top-p (nucleus), classifier-free guidance.

    logits = guidance_mix(cond_logits, uncond_logits, 2.0)        # uncond + 2 * (cond - uncond)
    tokens = sample(logits, temperature=1.0, top_k=100, top_p=0.95, generator=g)   # (B,)

Guidance has one convention in minivar: uncond + s * (cond - uncond), s = 1 is no guidance, for every generator.
A schedule turns a model's guidance into an s per step: VAR ramps it over the scales (`linear_ramp`).

Every function returns new tensors and leaves its inputs alone. (The filter LlamaGen and VAR copy from an old
Hugging Face helper writes -inf into the caller's logits in place; harmless there, a trap in a notebook that
plots the logits after sampling.)
"""

import math

import torch


def guidance_mix(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on logits (LlamaGen): uncond + scale * (cond - uncond).
    scale 1 is plain conditional sampling; scale > 1 pushes away from what the class-free model predicts."""
    return uncond + scale * (cond - uncond)


def linear_ramp(guidance: float, step: int, n_steps: int) -> float:
    """The guidance scale of step `step` (0-based) of n_steps, rising linearly from 1 (no guidance) at the first
    step to `guidance` at the last: 1 + (guidance - 1) * step / (n_steps - 1). VAR's schedule over its scales.
    A single step is the last one and gets the full value (the official codes divide by zero there)."""
    if n_steps <= 1:
        return guidance
    return 1.0 + (guidance - 1.0) * (step / (n_steps - 1))


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (ties with the k-th are kept too), set the rest to -inf."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities add up to at least p (at least one).

    Sort descending; a token is dropped when the probability mass *before* it already reaches p, so the token
    that crosses p is kept (the official rule: cumulative > p, shifted right by one).
    """
    if p >= 1.0:
        return logits
    if p <= 0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    mass_before = sorted_logits.softmax(-1).cumsum(-1) - sorted_logits.softmax(-1)
    drop_sorted = mass_before >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def check_options(temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """Refuse sampling settings outside their range, naming it (before any sampling starts)."""
    if isinstance(temperature, bool) or not temperature >= 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = always the most likely token), got "
                         f"{temperature}")
    if 0 < temperature < 1e-6:  # dividing by it overflows the logits; it would only mean "the most likely" anyway
        raise ValueError(f"temperature {temperature:g}: a temperature this small makes the logits overflow; use 0 "
                         f"for the most likely token, or 1e-3 and more")
    if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 0:
        raise ValueError(f"top_k must be a whole number >= 0 (0 = keep every token), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1] (1 = keep every token), got {top_p}")


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """top-k first, then top-p among what is left (the official order). 0 / 1.0 switch a filter off."""
    check_options(top_k=top_k, top_p=top_p)
    return top_p_filter(top_k_filter(logits, top_k), top_p)


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           generator: torch.Generator = None) -> torch.Tensor:
    """logits (B, V) -> token indices (B,). temperature 0 means greedy (argmax)."""
    check_options(temperature)
    if temperature == 0:
        return logits.argmax(-1)
    scaled = logits.float() / temperature
    if not torch.isfinite(scaled).all():  # else softmax gives NaN and torch's multinomial a puzzling error
        raise ValueError(f"sampling met logits that are not finite numbers (NaN or inf) after dividing by the "
                         f"temperature {temperature:g}: a temperature this small (use 1e-3 or more, or 0 for the most "
                         f"likely token) or a guidance this large makes them overflow; choose milder values")
    probs = filter_logits(scaled, top_k, top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


__all__ = ["guidance_mix", "linear_ramp", "check_options", "top_k_filter", "top_p_filter", "filter_logits", "sample"]
