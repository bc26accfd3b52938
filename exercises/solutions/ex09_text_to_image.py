"""Solutions to exercise 09 (instructor copy)."""

import torch

PAD, NULL, UNK = 0, 1, 2


def caption_ids(captions, vocabulary, length):
    ids = torch.full((len(captions), length), PAD, dtype=torch.long)
    for row, words in enumerate(captions):
        if len(words) > length:
            raise ValueError(f"caption {row} has {len(words)} words, more than the {length} the model reads")
        if words:  # (ids[row, -0:] would be the whole row)
            ids[row, length - len(words):] = torch.tensor([vocabulary.get(w, UNK) for w in words])
    return ids


def prefix_mask(key_mask, n_new, n_past):
    B, T = key_mask.shape
    total = n_past + n_new
    causal = torch.ones(n_new, total, dtype=torch.bool).tril(n_past)  # row i sees columns <= n_past + i
    keys = torch.ones(B, total, dtype=torch.bool)
    keys[:, :min(T, total)] = key_mask[:, :total]  # the caption's padding is hidden; image tokens never are
    itself = torch.zeros(n_new, total, dtype=torch.bool)
    itself[torch.arange(n_new), n_past + torch.arange(n_new)] = True
    return (causal[None] & keys[:, None]) | itself[None]


def drop_captions(ids, p, generator=None):
    dropped = torch.rand(ids.shape[0], generator=generator) < p
    return torch.where(dropped[:, None], torch.full_like(ids, NULL), ids)


def guided_logits(step_logits, ids, scale):
    logits = step_logits(torch.cat([ids, torch.full_like(ids, NULL)]))  # one call for both halves
    cond, uncond = logits.chunk(2)
    return uncond + scale * (cond - uncond)
