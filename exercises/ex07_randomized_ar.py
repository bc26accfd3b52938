"""Exercise 07: the three ideas RAR adds to a plain raster GPT — random orders, their annealing, and positions that
say which token comes next.

Fill in the four functions below, then check your work with

    pytest -m ex07

Notebook 07 builds each piece; minivar/rar.py holds the reference (try it yourself first). Shapes: orders (B, N),
each row a permutation of the grid positions 0..N-1; the sequence the model reads is [cls, class, the N tokens in
their order].
"""

import torch


def random_order_ratio(progress: float, anneal_start: float, anneal_end: float) -> float:
    """Part 1. The probability r that a training sample is fed in a random order, `progress` in [0, 1] of the run.

    r is 1 before anneal_start, falls linearly to 0 between anneal_start and anneal_end, and is 0 from anneal_end
    on. A window of width 0 (anneal_start == anneal_end) is a step from 1 to 0 at that point."""
    raise NotImplementedError("Part 1 (random_order_ratio) is not done yet")


def sample_orders(batch: int, n: int, ratio: float, generator: torch.Generator = None) -> torch.Tensor:
    """Part 2. (batch, n) long: each row, independently, a uniformly random permutation of 0..n-1 with probability
    `ratio`, else the raster order 0, 1, ..., n-1. Draw every random number from `generator`."""
    raise NotImplementedError("Part 2 (sample_orders) is not done yet")


def slot_positions(orders: torch.Tensor):
    """Part 3. The target-aware position assignment. For the input slots [cls, class, t_o(0), ..., t_o(N-1)] of a
    sequence fed in the order `orders` (B, N), return two long tensors (B, N + 2):

    positions: the row of the position table each slot reads — 0 for cls, 1 for the class, 2 + p for the token at
               grid position p;
    targets:   the grid position of the token each slot must predict next, -1 where a slot predicts nothing (cls,
               and the last token of the order). The class slot predicts the first token of the order."""
    raise NotImplementedError("Part 3 (slot_positions) is not done yet")


def block_orders(batch: int, n: int, block: int, generator: torch.Generator = None) -> torch.Tensor:
    """Part 4 (a different order; the notebook does not try it). RAR shuffles single tokens. A middle way between
    raster and RAR keeps runs of `block` consecutive raster positions together: split 0..n-1 into n // block
    blocks (0..block-1, block..2*block-1, ...), put the blocks in a uniformly random order, each row on its own,
    and keep the raster order inside each block. -> (batch, n) long.
    block == 1 is RAR's uniform permutation; block == n is raster. n must be a multiple of block: otherwise raise
    a ValueError that says so. Draw every random number from `generator`.
    (Try it: train with these orders and see where between raster and RAR its samples land.)"""
    raise NotImplementedError("Part 4 (block_orders) is not done yet")
