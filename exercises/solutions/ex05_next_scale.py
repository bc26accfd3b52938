"""Exercise 05, a solution: VAR's block-causal mask, its per-token loss and its generation loop."""

import torch
import torch.nn.functional as F


def block_causal_mask(scales):
    scale_of = torch.repeat_interleave(torch.arange(len(scales)), torch.tensor([s * s for s in scales]))
    return scale_of[None, :] <= scale_of[:, None]


def next_scale_loss(logits, token_maps):
    targets = torch.cat([m.flatten(1) for m in token_maps], 1)  # (B, L), scale after scale
    per_token = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (B, L)
    sizes = [m.shape[1] * m.shape[2] for m in token_maps]
    per_scale = torch.stack([chunk.mean() for chunk in per_token.split(sizes, 1)])
    return per_token.mean(), per_scale.detach()


def generate_scales(step, labels, scales, next_input, temperature=1.0, generator=None):
    maps = []
    for k, s in enumerate(scales):
        logits = step(k, None if k == 0 else next_input(maps)).float()  # (B, s*s, V)
        if temperature == 0:
            tokens = logits.argmax(-1)
        else:
            probs = (logits / temperature).softmax(-1).flatten(0, 1)  # every token of the scale on its own
            tokens = torch.multinomial(probs, 1, generator=generator).view(len(labels), s * s)
        maps.append(tokens.view(len(labels), s, s))
    return maps


def attention_pairs(scales):
    # a token of scale k sees every token of scales 1..k: n_k queries times the tokens up to and including scale k
    seen, block = 0, 0
    for s in scales:
        seen += s * s
        block += s * s * seen
    return block, seen * (seen + 1) // 2
