"""Exercise 03, a solution: the training loss and the cached sampling loop of a raster-order generator."""

import torch
import torch.nn.functional as F


def teacher_forcing_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    predictions = logits[:, :tokens.shape[1]]  # position i predicts t_i; the last one (after t_{N-1}) nothing
    return F.cross_entropy(predictions.reshape(-1, predictions.shape[-1]).float(), tokens.reshape(-1))


def top_k_top_p_filter(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    out = logits.clone()
    if 0 < top_k < out.shape[-1]:
        kth = out.topk(top_k, dim=-1).values[..., -1:]
        out[out < kth] = float("-inf")
    if top_p < 1.0:
        sorted_logits, order = out.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the strictly more likely tokens
        drop = before >= top_p
        drop[..., 0] = False
        out = out.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return out


def sample_with_cache(step, labels, n, temperature=1.0, top_k=0, generator=None):
    x, out = labels[:, None], []
    for i in range(n):
        last = step(x, i)[:, -1].float()  # only the new position goes in; the cache holds the rest
        if temperature == 0:
            token = last.argmax(-1)
        else:
            probs = top_k_top_p_filter(last / temperature, top_k).softmax(-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        out.append(token)
        x = token[:, None]
    return torch.stack(out, 1)


def sequence_log_prob(step, labels, tokens):
    # the class and every token but the last go in (the last token is scored, never read); logits[:, i] saw
    # the class and t_<i, so it scores t_i: teacher forcing (part 1) through the cache (part 3), in one call
    inputs = torch.cat([labels[:, None], tokens[:, :-1]], 1)
    logp = step(inputs, 0).float().log_softmax(-1)
    return logp.gather(-1, tokens[..., None]).squeeze(-1).sum(1)
