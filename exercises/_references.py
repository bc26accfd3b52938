"""The graders' own answers, where no minivar function gives them: withheld from the student copy.

A grader asks `_grading.expected(exercise, case, name, *args)`. In the instructor's checkout that calls the function
`name` below and checks the value against the record in exercises/expected/EXERCISE.pt; in the student copy, which
has no file like this one, it reads the record. Record again after changing a case or a function here:

    MINIVAR_RECORD=1 python -m pytest exercises -m solution -p no:cacheprovider
"""

import torch
import torch.nn.functional as F
from _probes import CachedToy, LinearField, ToyVAR

from minivar.scales import block_causal_mask


def ex03_teacher_forcing(logits, tokens):
    """Part 1: the mean cross-entropy of t_i under logits[:, i], and the same one position late (for the hint)."""
    V = logits.shape[-1]
    return (F.cross_entropy(logits[:, :-1].reshape(-1, V), tokens.reshape(-1)),
            F.cross_entropy(logits[:, 1:].reshape(-1, V), tokens.reshape(-1)))


def ex03_greedy(V, n_classes, seed, labels, n):
    """Part 3: the greedy tokens of a toy fed one position at a time (the student's toy's twin)."""
    model, x, out = CachedToy(V, n_classes, seed), labels[:, None], []
    for i in range(n):
        token = model(x, i)[:, -1].argmax(-1)
        out.append(token)
        x = token[:, None]
    return torch.stack(out, 1)


def ex05_next_scale_loss(logits, maps):
    """Part 2: (the mean over every token, the mean of each scale, the mean of those means (for the hint))."""
    targets = torch.cat([m.flatten(1) for m in maps], 1)
    per_token = F.cross_entropy(logits.detach().transpose(1, 2), targets, reduction="none")
    per_scale = torch.stack([c.mean() for c in per_token.split([m.shape[1] * m.shape[2] for m in maps], 1)])
    return per_token.mean(), per_scale, per_scale.mean()


def ex05_greedy(scales, V, n_classes, labels, seed):
    """Part 3: the greedy maps of a toy given each scale once, with the features of the maps drawn before."""
    toy, maps = ToyVAR(scales, V, n_classes, labels, seed), []
    for k, s in enumerate(scales):
        maps.append(toy(k, None if k == 0 else toy.next_input(maps)).argmax(-1).view(len(labels), s, s))
    return maps


def ex01_vq_loss_gradient(beta, n):
    """Part 4: dL/dz = a (z - e), dL/de = b (e - z), read off autograd on one example."""
    z, e = torch.randn(n, dtype=torch.float64, requires_grad=True), torch.randn(n, dtype=torch.float64,
                                                                             requires_grad=True)
    loss = (z.detach() - e).pow(2).mean() + beta * (z - e.detach()).pow(2).mean()
    gz, ge = torch.autograd.grad(loss, (z, e))
    return float((gz / (z - e).detach()).mean()), float((ge / (e - z).detach()).mean())


def ex02_expected_usage(K, n):
    """Part 4: each code is missed by all n picks with probability (1 - 1/K)^n."""
    return 1.0 - (1.0 - 1.0 / K) ** n


def ex06_heun_step(C, D, seed, x, t, t_next, z):
    """Part 4: Heun's step on the student's toy's twin."""
    head = LinearField(C, D, seed)
    times = lambda s: torch.full((x.shape[0],), float(s))  # noqa: E731
    d1 = head(x, times(t), z)
    d2 = head(x + (t_next - t) * d1, times(t_next), z)
    return x + (t_next - t) * (d1 + d2) / 2


def ex03_log_prob(V, n_classes, seed, labels, tokens):
    """Part 5: the toy's twin fed the class, then the given tokens one at a time; each token scored by the logits
    of the position before it."""
    model, x, total = CachedToy(V, n_classes, seed), labels[:, None], torch.zeros(len(labels), dtype=torch.float64)
    for i in range(tokens.shape[1]):
        logp = model(x, i)[:, -1].double().log_softmax(-1)
        total += logp.gather(1, tokens[:, i:i + 1]).squeeze(1)
        x = tokens[:, i:i + 1]
    return total.float()


def ex04_first_scale(f, codebook):
    """Part 3: a 1x1 first scale done the way residual_encode does it, with F.interpolate both ways."""
    z = F.interpolate(f, size=(1, 1), mode="area").flatten(1)
    token = torch.cdist(z, codebook).argmin(1)
    up = F.interpolate(codebook[token][:, :, None, None], size=f.shape[-2:], mode="bicubic")
    return token, f - up


def ex05_attention_pairs(scales):
    """Part 5: the True entries of minivar's block-causal mask, and of a lower-triangular one of the same size."""
    mask = block_causal_mask(scales)
    return int(mask.sum()), int(torch.ones_like(mask).tril().sum())
