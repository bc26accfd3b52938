"""Graders for exercise 09 (text-to-image). Run `pytest -m ex09` to check your answers."""

import pytest
import torch
from _grading import exercise, implementations
from _probes import CaptionToy

from minivar.sandbox import StudentError
from minivar.text import NULL, PAD, UNK, prefix_attention


@pytest.fixture(scope="module", params=implementations("ex09"))
def ex(request):
    yield from exercise("ex09_text_to_image", request.param)


def reference_ids(captions, vocabulary, length):
    # built as lists, row by row: padding first, then each word's id (or UNK)
    rows = [[PAD] * (length - len(words)) + [vocabulary[w] if w in vocabulary else UNK for w in words]
            for words in captions]
    return torch.tensor(rows, dtype=torch.long).reshape(len(captions), length)


def test_part1_caption_ids(ex):
    vocabulary = {w: i + 3 for i, w in enumerate(["red", "apple", "cat", "face", "woman", "farmer", "tone"])}
    cases = [([["red", "apple"]], 4), ([["cat", "face"], ["woman", "farmer", "tone"], ["red"]], 3),
             ([["blue", "cat"], ["apple"]], 5), ([["red", "apple", "cat"]], 3)]
    for captions, length in cases:
        got = ex.caption_ids(captions, vocabulary, length)
        want = reference_ids(captions, vocabulary, length)
        case = f"captions {captions}, length {length}"
        assert isinstance(got, torch.Tensor) and got.shape == want.shape and got.dtype == torch.long, \
            f"Part 1 (caption_ids): {case}, expected a long tensor {tuple(want.shape)}, got " \
            f"{getattr(got, 'dtype', type(got).__name__)} {tuple(getattr(got, 'shape', ()))}"
        if not torch.equal(got, want):
            row = int((got != want).any(1).nonzero()[0])
            hint = " (an unknown word is UNK = 2, not dropped)" if any(w not in vocabulary for w in captions[row]) \
                else " (the words go at the end of the row, PAD = 0 before them: left padding)"
            raise AssertionError(f"Part 1 (caption_ids): {case}, row {row} is {got[row].tolist()}, expected "
                                 f"{want[row].tolist()}{hint}")
    try:
        ex.caption_ids([["red", "apple", "cat", "face"]], vocabulary, 3)
    except StudentError as e:
        if e.kind != "ValueError":
            pytest.fail(f"Part 1 (caption_ids): a caption of 4 words at length 3 raised {e}; raise a ValueError",
                        pytrace=False)
    else:
        pytest.fail("Part 1 (caption_ids): a caption of 4 words at length 3 gave no error; raise a ValueError that "
                    "says the caption is too long", pytrace=False)


def test_part2_prefix_mask(ex):
    g = torch.Generator().manual_seed(0)
    cases = [(torch.tensor([[False, False, True], [True, True, True]]), 5, 0),
             (torch.tensor([[False, True, True, True]]), 1, 7), (torch.tensor([[False, False, True, True]]), 3, 2)]
    lengths = torch.randint(1, 7, (4,), generator=g)
    cases.append((torch.arange(6)[None] >= 6 - lengths[:, None], 8, 0))
    for key_mask, n_new, n_past in cases:
        got = ex.prefix_mask(key_mask, n_new, n_past)
        want = prefix_attention(key_mask, n_new, n_past)[:, 0]
        case = f"key_mask {key_mask.int().tolist()}, n_new {n_new}, n_past {n_past}"
        assert isinstance(got, torch.Tensor) and got.shape == want.shape and got.dtype == torch.bool, \
            f"Part 2 (prefix_mask): {case}, expected a bool tensor {tuple(want.shape)}, got " \
            f"{getattr(got, 'dtype', type(got).__name__)} {tuple(getattr(got, 'shape', ()))}"
        bad = (got != want).nonzero()
        if len(bad):
            b, i, j = bad[0].tolist()
            why = ("a position always sees itself" if j == n_past + i else
                   "no position sees a later one" if j > n_past + i else
                   "the caption's padding is hidden" if j < key_mask.shape[1] and not key_mask[b, j] else
                   "every earlier word and image token is visible")
            raise AssertionError(f"Part 2 (prefix_mask): {case}, row {b}: position {n_past + i} -> {j} is "
                                 f"{bool(got[b, i, j])}, expected {bool(want[b, i, j])} ({why})")


def test_part3_drop_captions(ex):
    ids = torch.randint(3, 50, (4000, 6), generator=torch.Generator().manual_seed(1))
    ids[:, :2] = PAD
    for p in (0.1, 0.5, 0.0, 1.0):
        before = ids.clone()
        got = ex.drop_captions(ids, p, torch.Generator().manual_seed(2))
        assert torch.equal(ids, before), "Part 3 (drop_captions): `ids` changed; return a new tensor"
        assert isinstance(got, torch.Tensor) and got.shape == ids.shape and got.dtype == torch.long, \
            f"Part 3 (drop_captions): expected a long tensor {tuple(ids.shape)}, got " \
            f"{getattr(got, 'dtype', type(got).__name__)} {tuple(getattr(got, 'shape', ()))}"
        null = (got == NULL).all(1)
        kept = (got == ids).all(1)
        assert (null | kept).all(), \
            f"Part 3 (drop_captions): row {int((~(null | kept)).nonzero()[0])} is neither the caption unchanged nor " \
            f"a whole row of NULL (the null caption replaces the whole caption, padding included)"
        share = null.float().mean().item()
        assert abs(share - p) < 0.03, \
            f"Part 3 (drop_captions): at p = {p}, {share:.1%} of the rows were dropped; expected about {p:.0%}"
    a, b = (ex.drop_captions(ids[:64], 0.5, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a, b), "Part 3 (drop_captions): the same generator seed must drop the same rows: draw every " \
                              "random number from `generator`"


def test_part4_guided_logits(ex):
    for seed, (B, T, V, scale) in enumerate([(2, 4, 7, 3.0), (1, 3, 5, 1.0), (5, 6, 11, 0.5)]):
        ids = torch.randint(3, 20, (B, T), generator=torch.Generator().manual_seed(seed))
        ids[:, 0] = PAD
        model = ex.probe("CaptionToy", 20, V, seed)
        got = ex.guided_logits(model, ids, scale)
        calls = model.state.get("calls", [])
        assert len(calls) == 1, f"Part 4 (guided_logits): step_logits was called {len(calls)} times; call it once, " \
                                f"on the captions and the null captions together (one batch of 2B rows)"
        rows = torch.tensor(calls[0])
        want_rows = torch.cat([ids, torch.full_like(ids, NULL)])
        assert rows.shape == want_rows.shape and torch.equal(rows, want_rows), \
            f"Part 4 (guided_logits): step_logits got rows {rows.tolist()}; expected the {B} captions, then {B} " \
            f"null captions (rows of NULL = 1)"
        twin = CaptionToy(20, V, seed)
        both = twin(want_rows)
        want = both[B:] + scale * (both[:B] - both[B:])
        assert isinstance(got, torch.Tensor) and got.shape == want.shape and torch.allclose(got, want, atol=1e-5), \
            f"Part 4 (guided_logits): at scale {scale}, the mix is not uncond + scale·(cond − uncond) (the first " \
            f"{B} rows are the captions', the last {B} the null caption's)"
