"""How every generator samples: its options, the guidance schedule, and turning logits into tokens.

    logits = guidance_mix(cond_logits, uncond_logits, 2.0)        # uncond + 2 * (cond - uncond)
    tokens = sample(logits, temperature=1.0, top_k=100, top_p=0.95, generator=g)   # (B,)
    GuidanceSchedule(4.0, "linear").at(step, n_steps)              # VAR's s for one of its scales

Guidance has one convention in minivar: uncond + s * (cond - uncond), s = 1 is no guidance, s = 0 the unconditional
model, for every generator. One `GuidanceSchedule` turns a model's guidance into an s per step: constant (LlamaGen),
a linear ramp over the scales (VAR, FlowAR) or a cosine with a power over the tokens (RAR).

Every generator declares its knobs as a `SamplingOptions` dataclass (`TokenSampling` for the three that draw tokens,
FlowAR's adds its ODE solver's); `generate(labels, options, **overrides)` takes one, and the command line, the sweep
and the notebooks build theirs from it, so a new generator's knobs need no table anywhere else. A field left None
takes the model config's field of the same name (its trained default, e.g. `guidance`).

Every function returns new tensors and leaves its inputs alone. (The filter LlamaGen and VAR copy from an old
Hugging Face helper writes -inf into the caller's logits in place; harmless there, a trap in a notebook that
plots the logits after sampling.)
"""

import contextlib
import dataclasses
import math
import numbers
import sys
import time
import typing
import warnings
from dataclasses import dataclass, field

import torch


def guidance_mix(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on logits (LlamaGen): uncond + scale * (cond - uncond).
    scale 1 is plain conditional sampling; scale > 1 pushes away from what the class-free model predicts."""
    return uncond + scale * (cond - uncond)


def option(default, help: str, choices=()):
    """A SamplingOptions field with the one line of help the command line shows for it (and, for a string, the
    values it takes, shown there too)."""
    return field(default=default, metadata={"help": help, "choices": tuple(choices)})


SCHEDULES = ("constant", "linear", "cosine")


def ramp_over_scales():
    """The guidance_schedule field of the scale-wise generators (VAR, FlowAR): their releases ramp linearly."""
    return option("linear", "how s moves over the scales: linear (from 1 at the first scale to s at the last, the "
                            "release's), constant, or cosine", choices=SCHEDULES)


def compile_switch():
    """The compile field of every generator that has one (the raster GPT, RAR, VAR, FlowAR)."""
    return option(False, "compile the sampling loop's step with torch.compile (static KV cache, fixed shapes: one "
                         "graph per batch size, and per scale for VAR and FlowAR; CUDA: replayed as CUDA graphs). "
                         "Each new shape compiles on first use (seconds to tens of seconds): pays for many samples")


@dataclass(frozen=True)
class SamplingOptions:
    """What every generator's sampling takes. Subclass it (a frozen dataclass) to add a generator's own knobs, and
    extend `check()` to refuse their bad values; fields hold numbers, strings or booleans only (tensors, such as a
    completion's given tokens, are arguments of generate)."""
    guidance: float = option(None, "classifier-free guidance s in uncond + s (cond - uncond): 1 = none, 0 = the "
                                   "unconditional model (default: the model's); the schedule says how it is reached")
    guidance_schedule: str = option("constant", "how s moves over the sampler's steps: constant, linear (from 1 at "
                                                "the first step to s at the last) or cosine (with --guidance-power)",
                                    choices=SCHEDULES)
    guidance_power: float = option(1.0, "the cosine schedule's power: s_t = 1 + (s - 1)(1 - cos(pi (t/N)^power)) / 2 "
                                        "(0 = constant s)")

    def resolved(self, cfg):
        """These options with every None field taken from the model config's field of the same name, checked."""
        missing = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(self)
                   if getattr(self, f.name) is None and hasattr(cfg, f.name)}
        done = dataclasses.replace(self, **missing) if missing else self
        done.check()
        return done

    def check(self):
        """Refuse a value out of range, naming the option and its range (before any sampling starts)."""
        g = self.guidance
        if isinstance(g, bool) or not isinstance(g, numbers.Real) or not 0 <= g < float("inf"):
            raise ValueError(f"guidance must be a finite number >= 0 (1 = no guidance, 0 = the unconditional model), "
                             f"got {g!r}")
        if self.guidance_schedule not in SCHEDULES:
            raise ValueError(f"guidance_schedule must be one of {', '.join(SCHEDULES)}, got {self.guidance_schedule!r}")
        p = self.guidance_power
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p < float("inf"):
            raise ValueError(f"guidance_power must be a number >= 0 (0 = constant guidance), got {p!r}")
        for name, (kind, _, _) in self.field_types().items():  # every generator's switches (use_cache, compile, heun)
            if kind is bool and not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} is a switch: True or False, got {getattr(self, name)!r}")

    @property
    def schedule(self) -> "GuidanceSchedule":
        return GuidanceSchedule(float(self.guidance), self.guidance_schedule, float(self.guidance_power))

    def changed(self, other: "SamplingOptions") -> dict:
        """{name: value} of the fields where these options differ from `other` (what a file name must carry)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(other, f.name)}

    @classmethod
    def field_types(cls) -> dict:
        """{name: (type, default, help)} of every option, for the command line and the error messages."""
        hints = typing.get_type_hints(cls)
        return {f.name: (hints[f.name], f.default, f.metadata.get("help", "")) for f in dataclasses.fields(cls)}

    @classmethod
    def first_declared(cls, name: str) -> dataclasses.Field:
        """The field `name` as the most basic options class declares it (its general help, before a generator's
        own class gives it another default)."""
        for base in reversed(cls.__mro__):
            if name in getattr(base, "__annotations__", {}) and dataclasses.is_dataclass(base):
                return base.__dataclass_fields__[name]
        raise KeyError(name)


@dataclass(frozen=True)
class TokenSampling(SamplingOptions):
    """The options of a generator that draws tokens from logits (raster GPT, VAR, RAR)."""
    temperature: float = option(1.0, "softmax temperature (0 = always the most likely token)")
    top_k: int = option(0, "keep the k most likely tokens (0 = all)")
    top_p: float = option(1.0, "nucleus: keep the most likely tokens holding this share of probability (1 = all)")

    def check(self):
        super().check()
        check_options(self.temperature, self.top_k, self.top_p)


@dataclass(frozen=True)
class TokenByToken(TokenSampling):
    """The options of a generator that draws one token per step with a KV cache (raster GPT, RAR)."""
    use_cache: bool = option(True, "reuse each step's keys and values (off: recompute the whole sequence every "
                                   "step, the slow reference the cache must match)")


@dataclass(frozen=True)
class CompiledTokens(TokenByToken):
    """TokenByToken and a compiled decoding step (the raster GPT, its text-to-image form, RAR): the generator's
    `decode_step`, compiled by `Generator.compiled_step`."""
    compile: bool = compile_switch()


class CompiledStep:
    """A sampler's step function, compiled once for each shape of its inputs (a batch size; for VAR and FlowAR also
    a scale) and reused; where compiling is not possible (no torch.compile, MPS, no C++ compiler, ...) it warns once
    and runs the function itself, which computes the same.

    `backend` is torch.compile's (None: inductor; the tests use "eager", which traces without generating code)."""

    backend = None
    most_shapes = 64  # graphs kept per step: 10 scales x a few batch sizes (dynamo's default stops at 8)

    def __init__(self, fn, device: torch.device, made_for=None):
        self.fn, self.device, self.compiled, self.failed, self.seen = fn, device, None, False, set()
        self.made_for = made_for  # what the caller made it for (Generator.compiled_step: the model's device, dtype)
        self.kept = {}

    def caches(self, key, make):
        """The static KV caches the step reads for `key` (the batch size: one set per shape, as the graphs), made
        once by make() (KVCaches with fixed_address, in a list or a tuple of lists) and kept with the step, emptied
        for each new sample: a compiled step, above all a CUDA graph, works on them at fixed addresses. (They stay
        allocated with the model after sampling; `model.__dict__.pop("_compiled_steps")` lets them go.)"""
        if key not in self.kept:
            self.kept[key] = make()
        for cache in flat(self.kept[key]):
            cache.reset()
        return self.kept[key]

    def __call__(self, *args):
        if self.failed:
            return self.fn(*args)
        reason = "MPS" if self.device.type == "mps" else None if hasattr(torch, "compile") else "torch < 2.0"
        if reason:
            return self.fall_back(reason, *args)
        if self.compiled is None:
            mode = "reduce-overhead" if self.device.type == "cuda" and self.backend is None else None
            self.compiled = torch.compile(self.fn, mode=mode, dynamic=False,
                                          **({"backend": self.backend} if self.backend else {}))
        shape = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
        new, t0 = shape not in self.seen, time.perf_counter()
        try:  # a new shape compiles (dynamo's limit raised for it); a seen one runs its graph
            with torch._dynamo.config.patch(recompile_limit=self.most_shapes) if new else contextlib.nullcontext():
                out = self.compiled(*args)
        except Exception as e:  # noqa: BLE001 (any compiler failure: fall back, never fail the sampling)
            return self.fall_back(f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}", *args)
        if new:
            self.seen.add(shape)
            print(f"compiled {getattr(self.fn, '__name__', 'the step')} for inputs {shape[0]} in "
                  f"{time.perf_counter() - t0:.1f} s (once per shape)", file=sys.stderr)
        return out.clone() if self.device.type == "cuda" else out  # a CUDA graph's output is overwritten next call

    def fall_back(self, reason: str, *args):
        self.failed = True
        warnings.warn(f"cannot compile the sampling step here ({reason}); sampling without compiling (the same "
                      f"samples, at eager speed)", stacklevel=3)
        return self.fn(*args)


# The samples after which compiling the sampling step has paid for its compile time, per generator and batch size,
# on 2 CPU cores: benchmarks/sampling_speed.py (compile seconds / seconds saved per sample; tests/test_benchmarks.py
# holds these to the latest rows of results/sampling_speed.csv). None: compiling was never faster there. No GPU was
# measured, so there `sample` compiles only when asked.
COMPILE_PAYS_AFTER = {
    "raster": {1: 200, 64: 2_700, 256: 3_300},
    "rar": {1: 150, 64: 2_400, 256: 3_000},
    "var": {1: 32_000, 64: 37_000, 256: 13_000},
    "flowar": {1: 1_000, 64: 4_700, 256: 2_800},
}

def compile_pays(kind: str, n_samples: int, batch_size: int, device) -> bool:
    """Whether compiling a `kind` generator's sampling step pays for itself over n_samples drawn batch_size at a
    time on `device`: the recorded break-even at the nearest batch size measured (CPU only: no GPU was measured)."""
    table = COMPILE_PAYS_AFTER.get(kind) if torch.device(device).type == "cpu" else None
    if not table:
        return False
    batch = max(1, min(batch_size, n_samples))
    even = table[min(table, key=lambda b: abs(math.log(b / batch)))]
    return even is not None and n_samples >= even


def flat(items):
    """The leaves of nested lists and tuples."""
    for item in items:
        yield from flat(item) if isinstance(item, (list, tuple)) else (item,)


@dataclass(frozen=True)
class GuidanceSchedule:
    """The guidance scale s of each step of a sampler. `scale` is the model's s; 0 means the unconditional model at
    every step (whatever the shape), 1 no guidance at all."""
    scale: float = 1.0
    shape: str = "constant"  # constant | linear (VAR, FlowAR: over the scales) | cosine (RAR: over the tokens)
    power: float = 1.0  # cosine only

    @property
    def guided(self) -> bool:
        """Whether the sampler needs the unconditional half of the batch at all (s = 1 halves the work)."""
        return self.scale != 1.0

    def at(self, step: int, n_steps: int) -> float:
        if self.scale == 0 or self.shape == "constant":
            return self.scale
        if self.shape == "linear":
            return linear_ramp(self.scale, step, n_steps)
        if self.shape == "cosine":
            return cosine_ramp(self.scale, step, n_steps, self.power)
        raise ValueError(f"a guidance schedule is one of {', '.join(SCHEDULES)}, got {self.shape!r}")


def linear_ramp(guidance: float, step: int, n_steps: int) -> float:
    """The guidance scale of step `step` (0-based) of n_steps, rising linearly from 1 (no guidance) at the first
    step to `guidance` at the last: 1 + (guidance - 1) * step / (n_steps - 1). VAR's schedule over its scales.
    A single step is the last one and gets the full value (the official codes divide by zero there)."""
    if n_steps <= 1:
        return guidance
    return 1.0 + (guidance - 1.0) * (step / (n_steps - 1))


def cosine_ramp(guidance: float, step: int, n_steps: int, power: float) -> float:
    """RAR's schedule: 1 + (guidance - 1) (1 - cos(pi (step / n_steps)^power)) / 2 — from 1 at the first step
    towards `guidance` at the last (reaching it only in the limit), slowly at first for large powers; power 0 keeps
    it at `guidance` throughout (0^0 = 1, as the release computes it)."""
    frac = (step / n_steps) ** power if power else 1.0
    return 1.0 + (guidance - 1.0) * (1 - math.cos(math.pi * frac)) / 2


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


def draw(probs: torch.Tensor, generator: torch.Generator = None) -> torch.Tensor:
    """One index per row of probs (B, V), drawn in proportion to them: argmax(p / q) with q ~ Exp(1) per entry (the
    Gumbel-max trick, with the exponential of the Gumbel noise folded in). torch.multinomial(probs, 1) computes
    exactly this, the same draws from the same generator (tests/test_sampling.py checks it), but first reads the
    probabilities back to the CPU to check them: on a GPU that read makes the CPU wait at every token."""
    q = torch.empty_like(probs).exponential_(1, generator=generator)
    return (probs / q).argmax(-1)


def nonfinite_error(temperature: float) -> ValueError:
    return ValueError(f"sampling met logits that are not finite numbers (NaN or inf) after dividing by the "
                      f"temperature {temperature:g}: a temperature this small (use 1e-3 or more, or 0 for the most "
                      f"likely token) or a guidance this large makes them overflow; choose milder values")


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           generator: torch.Generator = None, nonfinite: torch.Tensor = None) -> torch.Tensor:
    """logits (B, V) -> token indices (B,). temperature 0 means greedy (argmax).

    Logits that are not finite raise an error that names the cause (softmax would give NaN). `nonfinite`, a bool
    tensor () on the logits' device, defers that check: each call ORs into it instead of reading it, and the sampler
    calls `raise_if_nonfinite` once after its loop (on a GPU, reading it every token makes the CPU wait each time)."""
    check_options(temperature)
    if temperature == 0:
        return logits.argmax(-1)
    scaled = logits.float() / temperature
    if nonfinite is not None:
        nonfinite |= ~torch.isfinite(scaled).all()
    elif not torch.isfinite(scaled).all():  # else softmax gives NaN
        raise nonfinite_error(temperature)
    return draw(filter_logits(scaled, top_k, top_p).softmax(-1), generator)


def raise_if_nonfinite(nonfinite: torch.Tensor, temperature: float):
    """After a sampler's loop: the deferred check of `sample(..., nonfinite=)` (one read for the whole loop)."""
    if bool(nonfinite):
        raise nonfinite_error(temperature)


__all__ = ["SamplingOptions", "TokenSampling", "TokenByToken", "CompiledTokens", "CompiledStep", "GuidanceSchedule",
           "option", "compile_switch", "COMPILE_PAYS_AFTER", "compile_pays", "ramp_over_scales", "SCHEDULES",
           "guidance_mix", "linear_ramp", "cosine_ramp", "check_options", "top_k_filter", "top_p_filter",
           "filter_logits", "draw", "sample", "raise_if_nonfinite"]
