"""Graders for exercise 07 (RAR). Run `pytest -m ex07` to check your answers."""

import math

import pytest
import torch
from _grading import exercise, implementations

from minivar import rar
from minivar.sandbox import StudentError


@pytest.fixture(scope="module", params=implementations("ex07"))
def ex(request):
    yield from exercise("ex07_randomized_ar", request.param)


def test_part1_random_order_ratio(ex):
    g = torch.Generator().manual_seed(0)
    windows = [(0.5, 0.75), (0.0, 1.0), (0.2, 0.3), (1.0, 1.0), (0.0, 0.0), (0.4, 0.4)]
    for start, end in windows:
        at = sorted({0.0, 1.0, start, end, (start + end) / 2, *torch.rand(6, generator=g).tolist()})
        for p in at:
            got = ex.random_order_ratio(p, start, end)
            expected = rar.random_order_ratio(p, start, end)
            assert isinstance(got, (int, float)) and abs(got - expected) < 1e-9, \
                (f"Part 1 (random_order_ratio): window [{start}, {end}] at progress {p:.3f} gives {got}, expected "
                 f"{expected:.3f}" + (" (a window of width 0 is a step: 1 before it, 0 from it on)" if start == end
                                      else ""))


def test_part2_sample_orders(ex):
    for batch, n, ratio in [(3000, 16, 0.3), (2000, 9, 0.8), (500, 64, 1.0), (50, 16, 0.0), (1, 4, 1.0)]:
        got = ex.sample_orders(batch, n, ratio, torch.Generator().manual_seed(batch + n))
        assert isinstance(got, torch.Tensor) and got.shape == (batch, n) and got.dtype == torch.long, \
            f"Part 2 (sample_orders): expected a long tensor ({batch}, {n}), got {getattr(got, 'dtype', got)} " \
            f"{tuple(getattr(got, 'shape', ()))}"
        not_perm = (got.sort(1).values != torch.arange(n)).any(1)
        assert not not_perm.any(), \
            f"Part 2 (sample_orders): row {int(not_perm.nonzero()[0])} is not a permutation of 0..{n - 1}"
        expected = (1 - ratio) + ratio / math.factorial(min(n, 12))  # a random permutation can be raster by chance
        if batch >= 500:  # the share of raster rows, in each half of the batch: one coin per row, anywhere
            for half, rows in (("first", got[:batch // 2]), ("second", got[batch // 2:])):
                raster = (rows == torch.arange(n)).all(1).float().mean().item()
                tol = 4 * math.sqrt(expected * (1 - expected) / len(rows)) + 1e-3
                assert abs(raster - expected) <= tol, \
                    (f"Part 2 (sample_orders): at ratio {ratio}, {raster:.1%} of the {half} half's rows are raster; "
                     f"expected about {expected:.1%} (each row is random with probability ratio, on its own coin)")
        if ratio == 1.0 and n >= 16:  # uniform over all n! orders: no two of a few thousand rows agree
            distinct = len(set(map(tuple, got.tolist())))
            assert distinct == batch, \
                (f"Part 2 (sample_orders): {batch} random orders of {n} positions hold only {distinct} different "
                 f"ones; a uniform permutation (argsort of noise, torch.randperm) almost never repeats")
        if ratio == 1.0 and batch >= 500:  # uniform: every position equally likely first, and second
            for k in (0, 1):
                freq = torch.bincount(got[:, k], minlength=n).float() / batch
                assert (freq - 1 / n).abs().max() < 5 / n, \
                    f"Part 2 (sample_orders): step {k} of the random orders is not uniform over the grid positions"
    counts = {int((ex.sample_orders(400, 9, 0.5, torch.Generator().manual_seed(s)) != torch.arange(9)).any(1).sum())
              for s in range(5)}
    assert len(counts) > 1, \
        f"Part 2 (sample_orders): five seeds gave the same number of random rows ({counts.pop()} of 400): each row " \
        f"tosses its own coin, so that number varies from seed to seed"
    a = ex.sample_orders(64, 16, 0.5, torch.Generator().manual_seed(3))
    b = ex.sample_orders(64, 16, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b), "Part 2 (sample_orders): the same generator seed must give the same orders: draw " \
                              "every random number from `generator`"


def test_part3_slot_positions(ex):
    g = torch.Generator().manual_seed(7)
    cases = [torch.tensor([[2, 0, 3, 1]]), torch.arange(9)[None], torch.stack([torch.randperm(16, generator=g)
                                                                               for _ in range(5)])]
    for orders in cases:
        got = ex.slot_positions(orders)
        assert isinstance(got, tuple) and len(got) == 2, "Part 3 (slot_positions): return (positions, targets)"
        positions, targets = got
        want_p, want_t = rar.slot_positions(orders)
        B, N = orders.shape
        for name, have, want in (("positions", positions, want_p), ("targets", targets, want_t)):
            assert isinstance(have, torch.Tensor) and have.shape == (B, N + 2), \
                f"Part 3 (slot_positions): {name} must be ({B}, {N + 2}), one per slot [cls, class, N tokens]"
            bad = (have != want).nonzero()
            if len(bad):
                b, s = bad[0].tolist()
                slot = "cls" if s == 0 else "class" if s == 1 else f"token {s - 2} of the order"
                raise AssertionError(f"Part 3 (slot_positions): {name}, row {b}, slot {s} ({slot}): got "
                                     f"{int(have[b, s])}, expected {int(want[b, s])} for orders {orders[b].tolist()}")


def test_part4_block_orders(ex):
    for batch, n, block in [(2400, 12, 4), (3000, 9, 3), (500, 16, 1), (20, 16, 16), (1, 6, 2), (600, 64, 8)]:
        got = ex.block_orders(batch, n, block, torch.Generator().manual_seed(n + block))
        case = f"with n = {n}, block = {block}"
        assert isinstance(got, torch.Tensor) and got.shape == (batch, n) and got.dtype == torch.long, \
            f"Part 4 (block_orders): {case}, expected a long tensor ({batch}, {n}), got " \
            f"{getattr(got, 'dtype', got)} {tuple(getattr(got, 'shape', ()))}"
        bad = (got.sort(1).values != torch.arange(n)).any(1)
        assert not bad.any(), f"Part 4 (block_orders): {case}, row {int(bad.nonzero()[0])} is not a permutation " \
                              f"of 0..{n - 1}"
        runs = got.view(batch, n // block, block)
        inside = (runs - runs[..., :1] != torch.arange(block)).any(-1) | (runs[..., 0] % block != 0)
        assert not inside.any(), \
            (f"Part 4 (block_orders): {case}, row {int(inside.any(1).nonzero()[0])} is "
             f"{got[inside.any(1).nonzero()[0]].flatten().tolist()[:2 * block]}...: every run of {block} must be "
             f"one block, in raster order (b * block, b * block + 1, ...)")
        m = n // block
        if batch >= 500 and m > 1:  # the blocks' order is uniform: each block equally likely first, and each order
            first = torch.bincount(runs[:, 0, 0] // block, minlength=m).float() / batch
            tol = 4 * math.sqrt((1 / m) * (1 - 1 / m) / batch) + 1e-3
            assert (first - 1 / m).abs().max() <= tol, \
                (f"Part 4 (block_orders): {case}, block {int((first - 1 / m).abs().argmax())} comes first "
                 f"{first.max():.1%} of the time; each of the {m} blocks should, about {1 / m:.1%}")
            if m <= 4:  # every one of the m! orders of the blocks, about equally often
                orders = torch.unique(runs[:, :, 0] // block, dim=0, return_counts=True)[1].float() / batch
                p = 1 / math.factorial(m)
                assert len(orders) == math.factorial(m) and (orders - p).abs().max() <= 4 * math.sqrt(p / batch), \
                    (f"Part 4 (block_orders): {case}, the {m} blocks came in {len(orders)} different orders, "
                     f"unevenly; a uniform order reaches all {math.factorial(m)}, each about {p:.1%} of the time")
    a, b = (ex.block_orders(64, 16, 4, torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(a, b), "Part 4 (block_orders): the same generator seed must give the same orders: draw " \
                              "every random number from `generator`"
    for n, block in [(10, 4), (7, 2)]:
        try:
            ex.block_orders(4, n, block, torch.Generator().manual_seed(0))
        except StudentError as e:  # it carries the name of the exception the file raised
            if e.kind != "ValueError":
                pytest.fail(f"Part 4 (block_orders): n = {n}, block = {block} raised {e}; raise a ValueError "
                            f"(n is not a multiple of block)", pytrace=False)
        else:
            pytest.fail(f"Part 4 (block_orders): n = {n} is not a multiple of block = {block}, yet no error: raise "
                        f"a ValueError that says so", pytrace=False)
