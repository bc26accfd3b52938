"""The graders' own answers, where no minivar function gives them: withheld from the student copy.

A grader asks `_grading.expected(exercise, case, name, *args)`. In the instructor's checkout that calls the function
`name` below and checks the value against the record in exercises/expected/EXERCISE.pt; in the student copy, which
has no file like this one, it reads the record. Record again after changing a case or a function here:

    MINIVAR_RECORD=1 python -m pytest exercises -m solution -p no:cacheprovider
"""

import torch
import torch.nn.functional as F
from _probes import CachedToy, ToyVAR


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
