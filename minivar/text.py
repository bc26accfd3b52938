"""Captions as the condition (LlamaGen's text-to-image, at emoji scale): words -> ids -> features -> prefix tokens.

    vocab = Vocabulary.from_captions(["red apple", "cat face"])
    ids, unknown = vocab.encode(["red cat"], length=4)   # (1, 4) left-padded: [<pad>, <pad>, red, <unk>]; [["cat"]]
    features = TextEncoder(len(vocab), 4, width=64, depth=2)(ids)        # (1, 4, 64), padding masked out
    prefix = CaptionEmbedder(64, 256, length=4)(features, ids)           # (1, 4, 256): the GPT's first 4 tokens

How LlamaGen does it (autoregressive/models/gpt.py, CaptionEmbedder; dataset/t2i.py): a frozen T5-XL turns a caption
into up to 120 feature vectors of 2048 numbers; a two-layer MLP (no biases, tanh-GELU) projects each to the GPT's
width, and they stand in front of the image tokens, *left*-padded so the caption's last word sits next to the first
image token. Padding is masked out of attention (every position still sees itself, so no row is empty). In training
the whole caption is replaced, with probability `class_dropout_prob`, by a null caption: the same network then also
models p(image) and classifier-free guidance mixes the two.

Here there is no hub to download T5 from, so a small encoder (word embeddings, learned positions, a few
bidirectional Llama blocks) is trained with the generator; `Captions(features, mask)` is the slot where features
from any frozen encoder plug in instead (T5 on a machine with internet), as LlamaGen's T5 features do. Two
differences from the release, both for a cleaner p(image): the null caption is a learned parameter (the release
registers its random `uncond_embedding` as a buffer, so it stays as drawn), and it is seen whole (the release keeps
the dropped caption's padding mask, so the null caption's length varies with the caption it replaced).
"""

import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .transformer import LlamaGenBlock, RMSNorm

PAD, NULL, UNK = 0, 1, 2  # the special words' ids: padding, the null caption (a row of NULL), an unknown word
SPECIALS = ("<pad>", "<null>", "<unk>")
WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")  # letters and digits; "medium-light" is two words, "o’clock" one


def words_of(caption: str) -> list:
    """A caption's words, lower-cased: "woman farmer: medium skin tone" -> [woman, farmer, medium, skin, tone]."""
    if not isinstance(caption, str):
        raise ValueError(f"a caption is a string, got {type(caption).__name__}")
    return WORD.findall(caption.lower())


class Vocabulary:
    """The words a model knows, ids in a fixed order: the three specials, then the words sorted."""

    def __init__(self, words):
        words = tuple(words)
        if words[:len(SPECIALS)] != SPECIALS or len(set(words)) != len(words):
            raise ValueError(f"a vocabulary starts with {SPECIALS} and holds each word once")
        self.words, self.index = words, {w: i for i, w in enumerate(words)}

    @classmethod
    def from_captions(cls, captions) -> "Vocabulary":
        return cls(SPECIALS + tuple(sorted({w for c in captions for w in words_of(c)})))

    def __len__(self):
        return len(self.words)

    def encode(self, captions, length: int):
        """captions (a list of strings) -> (ids (B, length) long, left-padded with PAD; unknown words of each
        caption, in order). An unknown word becomes UNK (the model has an embedding for "a word I do not know");
        a caption longer than `length` words is an error naming both lengths."""
        if isinstance(captions, str):
            captions = [captions]
        ids = torch.full((len(captions), length), PAD, dtype=torch.long)
        unknown = []
        for row, caption in enumerate(captions):
            words = words_of(caption)
            if not words:
                raise ValueError(f"caption {row} ({caption!r}) has no words")
            if len(words) > length:
                raise ValueError(f"caption {caption!r} has {len(words)} words; this model reads at most {length}")
            ids[row, length - len(words):] = torch.tensor([self.index.get(w, UNK) for w in words])
            unknown.append([w for w in words if w not in self.index])
        return ids, unknown

    def decode(self, ids) -> list:
        """ids (B, T) -> the captions they spell (padding left out; <unk> and <null> shown as such)."""
        return [" ".join(self.words[i] for i in row.tolist() if i != PAD) for row in torch.as_tensor(ids)]


@dataclass
class Captions:
    """Caption features from any text encoder, the slot LlamaGen's T5 fills: features (B, T, D) float, mask (B, T)
    bool (True = a real token, left-padded as the ids are). A row with no real token stands for the null caption
    (guidance's unconditional half, with_null). A batch: len(), split(n), cat() as a tensor's."""
    features: torch.Tensor
    mask: torch.Tensor

    def __len__(self):
        return self.features.shape[0]

    def split(self, size: int) -> list:
        return [Captions(f, m) for f, m in zip(self.features.split(size), self.mask.split(size))]

    def to(self, device) -> "Captions":
        return Captions(self.features.to(device), self.mask.to(device))

    def with_null(self) -> "Captions":
        """These captions, then a null caption for each (zero features, nothing visible: the model reads its null)."""
        return Captions(torch.cat([self.features, torch.zeros_like(self.features)]),
                        torch.cat([self.mask, torch.zeros_like(self.mask)]))


def caption_mask(ids: torch.Tensor) -> torch.Tensor:
    """Which caption positions are words (True), not padding; a null caption (a row of NULL) is all words."""
    return ids != PAD


def prefix_attention(key_mask: torch.Tensor, n_new: int, n_past: int) -> torch.Tensor:
    """(B, 1, n_new, n_past + n_new) bool for the next n_new positions of a sequence whose first P positions are a
    caption with key_mask (B, P): causal, padding hidden from every query, and each position sees itself (a padding
    query would otherwise see nothing, and softmax over nothing is NaN)."""
    B, P = key_mask.shape
    total = n_past + n_new
    allowed = torch.ones(n_new, total, dtype=torch.bool, device=key_mask.device).tril(n_past)
    keys = torch.ones(B, total, dtype=torch.bool, device=key_mask.device)
    keys[:, :min(P, total)] = key_mask[:, :total]
    itself = torch.zeros(n_new, total, dtype=torch.bool, device=key_mask.device)
    itself[torch.arange(n_new), n_past + torch.arange(n_new)] = True
    return ((allowed[None] & keys[:, None]) | itself[None])[:, None]


class TextEncoder(nn.Module):
    """Word ids (B, T) -> features (B, T, width): embeddings + learned positions, `depth` bidirectional Llama blocks
    with padding masked out, a final RMSNorm. frozen=True keeps the random word embeddings as drawn (an ablation:
    how much does learning the words matter?)."""

    def __init__(self, n_words: int, length: int, width: int = 128, depth: int = 2, n_head: int = 4,
                 frozen: bool = False, dropout: float = 0.0):
        super().__init__()
        self.words = nn.Embedding(n_words, width)
        self.positions = nn.Parameter(torch.zeros(length, width))
        self.blocks = nn.ModuleList(LlamaGenBlock(width, n_head, multiple_of=32, dropout=dropout)
                                    for _ in range(depth))
        self.norm = RMSNorm(width)
        self.words.weight.requires_grad_(not frozen)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.words(ids) + self.positions[:ids.shape[1]]
        seen = caption_mask(ids)
        mask = seen[:, None, None, :] | torch.eye(ids.shape[1], dtype=torch.bool, device=ids.device)  # (B, 1, T, T)
        for block in self.blocks:
            x = block(x, mask=mask)
        return self.norm(x)


class CaptionEmbedder(nn.Module):
    """Caption features (B, T, D) -> the GPT's prefix tokens (B, T, dim), as LlamaGen's CaptionEmbedder: a two-layer
    MLP (no biases, tanh-GELU) that moves the text encoder's features into the image model's space, and a learned
    null caption (T, D) that replaces a caption with probability `dropout` in training, and where `null` says so."""

    def __init__(self, in_dim: int, dim: int, length: int, dropout: float = 0.1):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(in_dim, dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.null = nn.Parameter(torch.randn(length, in_dim) / in_dim ** 0.5)  # LlamaGen's uncond_embedding's scale
        self.dropout = dropout

    def drop(self, null: torch.Tensor) -> torch.Tensor:
        """null (B,) bool -> the rows that read the null caption this step: in training, also a random `dropout`
        share of the others (caption dropout: what classifier-free guidance needs)."""
        if self.training and self.dropout > 0:
            null = null | (torch.rand(null.shape[0], device=null.device) < self.dropout)
        return null

    def forward(self, features: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
        """features (B, T, D), null (B,) bool: which rows read the null caption instead (drop() decides)."""
        features = torch.where(null[:, None, None], self.null[:features.shape[1]].to(features.dtype), features)
        return self.fc2(F.gelu(self.fc1(features), approximate="tanh"))


__all__ = ["PAD", "NULL", "UNK", "SPECIALS", "words_of", "Vocabulary", "Captions", "caption_mask",
           "prefix_attention", "TextEncoder", "CaptionEmbedder"]
