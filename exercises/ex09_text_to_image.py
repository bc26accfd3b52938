"""Exercise 09: words as the condition — LlamaGen's text-to-image, piece by piece.

Fill in the four functions below, then check your work with

    pytest -m ex09

Notebook 09 builds each piece; minivar/text.py holds the reference (try it yourself first). The sequence the model
reads is [caption word 1, ..., caption word T | image token 1, ..., image token N-1]: the caption left-padded with
PAD (id 0) so its last word stands next to the first image token.
"""

import torch

PAD, NULL, UNK = 0, 1, 2  # padding, the null caption (a whole row of NULL), a word the vocabulary lacks


def caption_ids(captions: list, vocabulary: dict, length: int) -> torch.Tensor:
    """Part 1. Captions (lists of words, already lower-cased and split) -> word ids (B, length), long.

    Each row holds its caption's ids (vocabulary[word], or UNK for a word the vocabulary lacks) at its *end*, PAD
    before them. A caption longer than `length` words raises a ValueError that says so."""
    raise NotImplementedError("Part 1 (caption_ids) is not done yet")


def prefix_mask(key_mask: torch.Tensor, n_new: int, n_past: int) -> torch.Tensor:
    """Part 2. The attention mask of the next n_new positions of a sequence whose first T positions are a caption.

    key_mask (B, T) bool: True where the caption holds a word, False on padding. Return (B, n_new, n_past + n_new)
    bool, True = may attend: position n_past + i sees positions <= n_past + i (causal), never a padding position of
    the caption, except that every position always sees itself (a padding position has nothing else to see, and
    a softmax over nothing is NaN)."""
    raise NotImplementedError("Part 2 (prefix_mask) is not done yet")


def drop_captions(ids: torch.Tensor, p: float, generator: torch.Generator = None) -> torch.Tensor:
    """Part 3. Caption dropout, what classifier-free guidance needs in training: each row of ids (B, T),
    independently with probability p, is replaced by the null caption (a row of NULL); the others are returned
    unchanged. Return a new tensor (leave `ids` as it is) and draw every random number from `generator`."""
    raise NotImplementedError("Part 3 (drop_captions) is not done yet")


def guided_logits(step_logits, ids: torch.Tensor, scale: float) -> torch.Tensor:
    """Part 4. One guided step over captions. `step_logits(conditions)` returns the next token's logits (R, V) for
    caption rows conditions (R, T). Call it ONCE, on the captions followed by one null caption (a row of NULL) per
    caption, and mix the two halves: uncond + scale·(cond − uncond) -> (B, V). scale 1 is the captions alone."""
    raise NotImplementedError("Part 4 (guided_logits) is not done yet")
