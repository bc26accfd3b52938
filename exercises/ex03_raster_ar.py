"""Exercise 03: how a raster-order generator learns and how it draws.

Fill in the four functions below, then check your work with

    pytest -m ex03

Notebook 03 builds the model; here you write the two loops around it: the teacher-forced loss it trains on, and
the sampling loop that runs it one token at a time with a KV cache; then (part 5, not in the notebook) you use the
same cached model to score an image instead of drawing one. (minivar/raster_ar.py and minivar/sampling.py
hold the reference; the graders refuse a file that imports it.) Shapes: tokens (B, N) long, the image's N codes in
raster order; logits (..., V) over the V codes.
"""

import torch


def teacher_forcing_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Part 1. The training loss of a class-conditional raster GPT.

    The model read the sequence [class, t_0, t_1, ..., t_{N-1}] (N + 1 inputs, the class first) through a causal
    mask, so `logits` is (B, N + 1, V): logits[:, i] saw only the first i + 1 inputs. Return the mean cross-entropy
    of every image token given what came before it (a scalar, mean over B * N predictions). Which logits predict
    which token, and which position predicts nothing?"""
    raise NotImplementedError("Part 1 (teacher_forcing_loss) is not done yet")


def top_k_top_p_filter(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Part 2. -> new logits with -inf outside the kept support (do not modify `logits` in place).
    top-k (k > 0): keep the k largest of each row. Then top-p (p < 1): among what is left, keep the smallest set
    of most likely tokens whose softmax probabilities add up to at least p (always at least one token)."""
    raise NotImplementedError("Part 2 (top_k_top_p_filter) is not done yet")


def sample_with_cache(step, labels: torch.Tensor, n: int, temperature: float = 1.0, top_k: int = 0,
                      generator: torch.Generator = None) -> torch.Tensor:
    """Parts 3 and 4. Draw n tokens per class label with a model that keeps a KV cache -> (B, n) long.

    step(inputs, start) runs the model on `inputs` (B, L) long, which are the positions start, ..., start + L - 1
    of the sequence [class, t_0, t_1, ...], and returns their logits (B, L, V). The model remembers (caches) every
    position it was given, so each position is given exactly once, in order, starting at 0 with the labels:
    recomputing the past is what the cache saves. Each new token is drawn from the logits of the last position:
    greedily (argmax) when temperature == 0, else from softmax(logits / temperature) restricted to the top_k most
    likely tokens (top_k == 0: all of them), with torch.multinomial(..., generator=generator).
    Part 3 grades the loop (greedy), part 4 the drawing (temperature, top-k, the generator)."""
    raise NotImplementedError("Part 3 (sample_with_cache) is not done yet")


def sequence_log_prob(step, labels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Part 5 (not in the notebook: work it out from parts 1 and 3). How likely does the model find a given image?
    -> (B,) float: log p(t_0, ..., t_{N-1} | class) = the sum over the row's N tokens of log p(t_i | class, t_<i),
    one number per row, for `tokens` (B, N) long and their class `labels` (B,).

    `step` is the cached model of parts 3 and 4 (each position given once, in order, from 0); you may give it
    several positions in one call. This is how a generator's likelihood (bits per token) is measured, and how
    a sampler can rank its own samples. Which positions must the model read, and which logits score which token?"""
    raise NotImplementedError("Part 5 (sequence_log_prob) is not done yet")
