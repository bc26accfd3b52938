"""Solutions to exercise 07 (instructor copy)."""

import torch


def random_order_ratio(progress: float, anneal_start: float, anneal_end: float) -> float:
    if progress < anneal_start:
        return 1.0
    if progress >= anneal_end:  # (>= also covers the window of width 0 without dividing by zero)
        return 0.0
    return 1.0 - (progress - anneal_start) / (anneal_end - anneal_start)


def sample_orders(batch: int, n: int, ratio: float, generator: torch.Generator = None) -> torch.Tensor:
    raster = torch.arange(n).expand(batch, n)
    shuffled = torch.rand(batch, n, generator=generator).argsort(dim=1)  # sorting noise gives a uniform permutation
    coin = torch.rand(batch, 1, generator=generator) < ratio
    return torch.where(coin, shuffled, raster)


def slot_positions(orders: torch.Tensor):
    B = orders.shape[0]
    none = torch.full((B, 1), -1, dtype=torch.long)
    positions = torch.cat([torch.tensor([[0, 1]]).expand(B, 2), orders + 2], dim=1)
    targets = torch.cat([none, orders, none], dim=1)  # slot k + 1 predicts orders[k]
    return positions, targets


def block_orders(batch, n, block, generator=None):
    if block < 1 or n % block:
        raise ValueError(f"n = {n} is not a multiple of block = {block}: pick a block that divides n")
    blocks = torch.rand(batch, n // block, generator=generator).argsort(dim=1)  # a uniform order of the blocks
    return (blocks[:, :, None] * block + torch.arange(block)).flatten(1)  # raster inside each block
