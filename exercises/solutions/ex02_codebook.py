"""Exercise 02, solutions (the graders in exercises/test_ex02.py run against these in CI)."""

import torch
import torch.nn.functional as F


def l2_nearest_code(z_flat, codebook):
    z, e = F.normalize(z_flat.float(), dim=1), F.normalize(codebook.float(), dim=1)
    return (z @ e.t()).argmax(1)  # max cosine == min distance on the unit sphere


def usage_and_perplexity(indices, codebook_size):
    counts = torch.bincount(indices.flatten(), minlength=codebook_size).float()
    p = counts[counts > 0] / counts.sum()
    return (counts > 0).float().mean().item(), torch.exp(-(p * p.log()).sum()).item()


def restart_dead_codes(codebook, last_used, step, z_flat, restart_after, generator=None):
    dead = (step - last_used) >= restart_after
    n_dead, new = int(dead.sum()), codebook.clone()
    if n_dead <= len(z_flat):  # distinct rows
        pick = torch.randperm(len(z_flat), generator=generator)[:n_dead]
    else:
        pick = torch.randint(0, len(z_flat), (n_dead,), generator=generator)
    new[dead] = z_flat[pick].to(new.dtype)
    return new, dead


def expected_usage(codebook_size, n):
    # a code stays unused when all n picks miss it: (1 - 1/K)^n; by linearity, the expected used fraction is
    # one minus that
    return 1.0 - (1.0 - 1.0 / codebook_size) ** n
