"""Exercise 02: a healthy codebook.

Fill in the three functions below, then check your work with

    pytest -m ex02

Notebook 02 builds each piece; minivar/vq.py holds the reference (try it yourself first).
Shapes: z_flat (N, C) encoder outputs, codebook (K, C), indices (N,) LongTensor.
"""

import torch


def l2_nearest_code(z_flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Part 1. LlamaGen's lookup: normalise z and every code to unit length, then take the nearest code.
    -> (N,) indices. (On the unit sphere, the nearest code is the one with the largest cosine similarity.)"""
    raise NotImplementedError("Part 1 (l2_nearest_code) is not done yet")


def usage_and_perplexity(indices: torch.Tensor, codebook_size: int) -> tuple:
    """Part 2. -> (usage, perplexity) as Python floats.
    usage: the fraction of the codebook_size codes that appear in `indices`.
    perplexity: exp(entropy) of the histogram of `indices`, the "effective number of codes used"."""
    raise NotImplementedError("Part 2 (usage_and_perplexity) is not done yet")


def restart_dead_codes(codebook: torch.Tensor, last_used: torch.Tensor, step: int, z_flat: torch.Tensor,
                       restart_after: int, generator: torch.Generator = None) -> tuple:
    """Part 3. Codes not used for `restart_after` steps (step - last_used >= restart_after) are dead: give each
    dead code a random row of z_flat, a different row for each (two restarted codes that start equal compete for
    the same vectors and one dies again), drawn with `generator` so a run can be repeated; when there are more
    dead codes than rows, rows may repeat. Return (new_codebook, dead_mask (K,) bool).
    Do not modify the `codebook` argument in place; live codes must stay exactly as they were."""
    raise NotImplementedError("Part 3 (restart_dead_codes) is not done yet")


def expected_usage(codebook_size: int, n: int) -> float:
    """Part 4 (derive it; the notebook does not print it). If each of n positions picked one of K codes uniformly at
    random and independently, what fraction of the K codes would be used at least once, in expectation? Return it
    as a float. (Then compare it with the usage notebook 02 measures on trained codebooks.)"""
    raise NotImplementedError("Part 4 (expected_usage) is not done yet")
