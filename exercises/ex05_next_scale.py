"""Exercise 05: what makes VAR's transformer next-scale: its mask, its loss, and its generation loop.

Fill in the four functions below, then check your work with

    pytest -m ex05

Notebook 05 builds the model; minivar/var.py holds the reference (the graders refuse a file that imports it).
Layout: the tokens of an image are laid out scale after scale, coarse to fine (s_1^2 tokens of scale 1, then s_2^2 of
scale 2, ...), each scale's token map (B, s, s) read in raster order.
"""

import torch


def block_causal_mask(scales: tuple) -> torch.Tensor:
    """Part 1. -> (L, L) bool with L = sum(s * s for s in scales), True = may attend. A query may attend to a key
    when the key's scale is the query's own scale or a coarser one."""
    raise NotImplementedError("Part 1 (block_causal_mask) is not done yet")


def next_scale_loss(logits: torch.Tensor, token_maps: list) -> tuple:
    """Part 2. VAR's training loss, from the logits (B, L, V) of one teacher-forced pass over all scales and the
    image's token maps [(B, s_1, s_1), (B, s_2, s_2), ...]. -> (loss, per_scale):
      loss       scalar: the cross-entropy of every token, averaged over all B * L of them (each token counts the
                 same, wherever it sits: a fine scale holds most of them);
      per_scale  (K,): the mean cross-entropy of each scale's tokens, detached (what notebook 05 plots)."""
    raise NotImplementedError("Part 2 (next_scale_loss) is not done yet")


def generate_scales(step, labels: torch.Tensor, scales: tuple, next_input, temperature: float = 1.0,
                    generator: torch.Generator = None) -> list:
    """Parts 3 and 4. VAR's generation loop -> the token maps [(B, s_1, s_1), ..., (B, s_K, s_K)] long.

    step(k, x) runs the transformer on scale k's inputs and returns that scale's logits (B, s_k^2, V); it keeps a
    KV cache, so scales are given once each, in order: k = 0 takes x = None (the class alone starts the image);
    scale k > 0 takes x = next_input(maps), the features (B, s_k^2, C) the tokenizer builds from all the token maps
    drawn so far (what scale k must refine). Every token of a scale is drawn at once, each on its own: greedily
    (argmax) when temperature == 0, else from softmax(logits / temperature) with
    torch.multinomial(..., generator=generator). Part 3 grades the loop (greedy), part 4 the drawing."""
    raise NotImplementedError("Part 3 (generate_scales) is not done yet")


def attention_pairs(scales: tuple) -> tuple:
    """Part 5 (count them; the notebook does not). How many (query, key) pairs may attend under VAR's block-causal
    mask over L = sum(s * s) tokens, and how many under a plain causal mask over the same L tokens (a token sees
    itself and every token before it)? -> (block_causal, causal) as ints.

    Then compare them for the emoji schedule (1, 2, 3, 4, 6, 8): which mask lets a token see more, and what does
    the difference buy a scale's tokens? (One loop, or a formula; no mask needed.)"""
    raise NotImplementedError("Part 5 (attention_pairs) is not done yet")
