"""Toy models the graders hand to a student's function (a sampling loop needs a model to call).

They hold no answers: they are the exercise's environment, built twice from the same arguments — in the student's
process (where the student's loop calls them) and in the grader's (which runs its own loop on its twin for the
reference). Each keeps a record of how it was called, and `report()` sends that record back to the grader; a use
against the rules (a position fed twice, a scale skipped) is recorded in `violation` as well as raised, so catching
the error does not hide it. Plain torch only: this file runs where minivar cannot be imported.
"""

import torch
import torch.nn.functional as F


class ProbeViolation(AssertionError):
    pass


class Probe:
    violation = ""

    def fail(self, message):
        self.violation = self.violation or message
        raise ProbeViolation(message)

    def report(self) -> dict:
        return {"violation": self.violation, **self.record()}

    def record(self) -> dict:
        return {}


class CachedToy(Probe):
    """A tiny autoregressive model over V codes that keeps a cache of what it was given: the logits at a position
    depend on every input so far, so a loop that skips, repeats or re-feeds positions draws other tokens.
    Called as model(inputs (B, L) long, start) -> logits (B, L, V); position 0 is the class."""

    def __init__(self, V, n_classes, seed, dim=16, part="Part 3 (sample_with_cache)"):
        g = torch.Generator().manual_seed(seed)
        self.part = part  # the exercise part whose function calls this toy, for its messages
        self.cls, self.tok = torch.randn(n_classes, dim, generator=g), torch.randn(V, dim, generator=g)
        self.mix, self.out = torch.randn(dim, dim, generator=g) / dim ** 0.5, torch.randn(dim, V, generator=g) * 1.5
        self.state, self.fed, self.calls = None, 0, []

    def __call__(self, inputs, start):
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != 2 or inputs.dtype != torch.long:
            self.fail(f"{self.part}: step() takes inputs (B, L) long, got "
                      f"{getattr(inputs, 'dtype', type(inputs).__name__)} {tuple(getattr(inputs, 'shape', ()))}")
        if start != self.fed:
            self.fail(f"{self.part}: step(inputs, start={start}) after the model has read {self.fed} "
                      f"positions; with a cache, each position is given once, in order (the next one is {self.fed})")
        self.calls.append((int(start), int(inputs.shape[1])))
        logits = []
        for j in range(inputs.shape[1]):
            pos = start + j
            e = self.cls[inputs[:, j]] if pos == 0 else self.tok[inputs[:, j]]
            self.state = e if self.state is None else torch.tanh(self.state @ self.mix + e)
            logits.append(self.state @ self.out)
        self.fed += inputs.shape[1]
        return torch.stack(logits, 1)

    def record(self):
        return {"calls": list(self.calls), "fed": self.fed}


class ToyVAR(Probe):
    """A tiny next-scale model with a cache: a scale's logits depend on the class and on every input given so far,
    so a loop that skips the next input, repeats a scale or feeds the wrong features draws other tokens.
    Called as model(k, x) -> logits (B, s_k * s_k, V); x is None at scale 0, else next_input(maps so far)."""

    def __init__(self, scales, V, n_classes, labels, seed, C=5):
        g = torch.Generator().manual_seed(seed)
        self.scales, self.V, self.C, self.labels = tuple(scales), V, C, labels
        self.cls = torch.randn(n_classes, C, generator=g)
        self.pos = [torch.randn(s * s, C, generator=g) for s in scales]
        self.out, self.code = torch.randn(C, V, generator=g) * 2, torch.randn(V, C, generator=g)
        self.memory, self.calls = self.cls[labels], 0

    def __call__(self, k, x):
        if k != self.calls:
            self.fail(f"Part 3 (generate_scales): step({k}, ...) after {self.calls} scales; with a cache each scale "
                      f"is given once, in order (the next one is {self.calls})")
        s = self.scales[k]
        if k == 0 and x is not None:
            self.fail("Part 3 (generate_scales): scale 0 takes x = None (the class alone starts)")
        if k > 0 and (not isinstance(x, torch.Tensor) or tuple(x.shape) != (len(self.labels), s * s, self.C)):
            self.fail(f"Part 3 (generate_scales): scale {k} takes next_input(maps), features "
                      f"{(len(self.labels), s * s, self.C)}, got {tuple(getattr(x, 'shape', ())) or x!r}")
        if k > 0:
            self.memory = torch.tanh(self.memory + x.mean(1))
        self.calls += 1
        return (self.memory[:, None] + self.pos[k][None]) @ self.out  # (B, s*s, V)

    def next_input(self, maps):
        k = len(maps)
        shapes = [tuple(m.shape) for m in maps] if isinstance(maps, (list, tuple)) else None
        want = [(len(self.labels), s, s) for s in self.scales[:k]]
        if shapes != want or any(m.dtype != torch.long for m in maps):
            self.fail(f"Part 3 (generate_scales): next_input takes the list of token maps drawn so far, long tensors "
                      f"{want}, got {shapes}")
        f = sum(F.interpolate(self.code[m].permute(0, 3, 1, 2), size=(self.scales[k],) * 2, mode="nearest")
                for m in maps)
        return f.flatten(2).transpose(1, 2)  # (B, s_k^2, C)

    def record(self):
        return {"calls": self.calls}


class LinearField(torch.nn.Module, Probe):
    """A velocity network simple enough to reason about, random enough that a wrong formula shows:
    head(x (B, N, C), t (B,), z (B, N, D)) -> (B, N, C)."""

    def __init__(self, channels, cond_dim, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = torch.randn(channels, channels, generator=g)
        self.b = torch.randn(cond_dim, channels, generator=g)

    def forward(self, x, t, z):
        if not isinstance(t, torch.Tensor) or t.shape != (x.shape[0],):
            self.fail(f"the head takes one time per sample, t of shape ({x.shape[0]},); got "
                      f"{tuple(getattr(t, 'shape', ())) or t!r} (pass t itself, not a copy reshaped for broadcasting)")
        return x @ self.a + z @ self.b + t.view(-1, 1, 1)


class CaptionToy(Probe):
    """A next-token model conditioned on captions: step(conditions (R, T) long) -> logits (R, V), each row's logits
    a fixed function of its words (a row of NULL = 1 is the null caption). It records every call, so a guided step
    that calls it twice, or builds the null half wrongly, is seen."""

    def __init__(self, n_words, V, seed, part="Part 4 (guided_logits)"):
        g = torch.Generator().manual_seed(seed)
        self.part, self.table = part, torch.randn(n_words, V, generator=g)
        self.calls = []

    def __call__(self, conditions):
        if not isinstance(conditions, torch.Tensor) or conditions.ndim != 2 or conditions.dtype != torch.long:
            self.fail(f"{self.part}: step_logits takes caption rows (R, T) long, got "
                      f"{getattr(conditions, 'dtype', type(conditions).__name__)} "
                      f"{tuple(getattr(conditions, 'shape', ()))}")
        self.calls.append(conditions.clone())
        weights = torch.arange(1, conditions.shape[1] + 1, dtype=torch.float)  # the words' order matters
        return (self.table[conditions] * weights[None, :, None]).sum(1)

    def record(self):
        return {"calls": [c.tolist() for c in self.calls]}
