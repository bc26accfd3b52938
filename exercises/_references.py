"""The graders' own answers, where no minivar function gives them: withheld from the student copy.

A grader asks `_grading.expected(exercise, case, name, *args)`. In the instructor's checkout that calls the function
`name` below and checks the value against the record in exercises/expected/EXERCISE.pt; in the student copy, which
has no file like this one, it reads the record. Record again after changing a case or a function here:

    MINIVAR_RECORD=1 python -m pytest exercises -m solution -p no:cacheprovider
"""

import torch
import torch.nn.functional as F
from _probes import CachedToy, LinearField, ToyVAR


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
    return float((gz / (z - e)).mean()), float((ge / (e - z)).mean())


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
