"""Text-to-image raster autoregression (LlamaGen's t2i, Sun et al. 2024): the raster GPT with a caption in front.

The class-conditional model reads one class token before the image tokens; this one reads a caption's T tokens:

    [caption word 1 ... caption word T | t_1, ..., t_{N-1}]   ->   p(t_i | t_<i, caption)

left-padded (the last word next to the first image token) and with the padding hidden from attention. The caption's
words pass through a small text encoder trained with the model (text.py; LlamaGen uses a frozen T5-XL) and the MLP
projection LlamaGen's CaptionEmbedder applies; caption dropout (a learned null caption) gives classifier-free
guidance the unconditional half, guidance being uncond + s * (cond - uncond) as for every generator of the course.

    model = minivar.load("pretrained:emoji-t2i")
    maps = model.generate(prompts=["red apple", "cat face"])       # (2, 8, 8); unknown words are said
    images = model.tokenizer.decode(maps)

Everything else (the Llama blocks, 2-D RoPE over the image tokens, the zero-initialised head, the sampler and its
KV cache) is raster_ar.RasterAR's: only the condition differs. The vocabulary is the words of the training split's
captions, kept in the config (and so in every checkpoint); captions of the test split may hold words it never saw.
"""

import warnings
from dataclasses import dataclass

import torch

from .data import load_captions
from .models import register
from .raster_ar import LlamaGenConfig, RasterAR
from .text import NULL, PAD, CaptionEmbedder, Captions, TextEncoder, Vocabulary, caption_mask, words_of


@dataclass
class TextToImageConfig(LlamaGenConfig):
    captions: str = "emoji"  # the dataset whose training captions give the vocabulary (when words is empty)
    words: tuple = ()  # the vocabulary, specials first (empty: the words of `captions`' training split)
    max_words: int = 0  # caption tokens before the image (0: the longest caption of `captions`, either split)
    text_dim: int = 128  # the text encoder's width (LlamaGen's T5-XL: 2048)
    text_depth: int = 2  # its bidirectional blocks (0: word embeddings + positions only)
    text_heads: int = 4
    frozen_words: bool = False  # keep the random word embeddings as drawn (the ablation: do learned words matter?)
    caption_dropout: float = 0.1  # probability of training on the null caption (LlamaGen: class_dropout_prob 0.1)

    def __post_init__(self):
        super().__post_init__()
        self.words = tuple(self.words)
        if not self.words or not self.max_words:  # the held-out captions' words stay unknown; their length not
            train, test = load_captions(self.captions, "train"), load_captions(self.captions, "test")
            self.words = self.words or Vocabulary.from_captions(train).words
            self.max_words = self.max_words or max(len(words_of(c)) for c in train + test)
        Vocabulary(self.words)  # checks the specials and duplicates
        if self.text_dim % self.text_heads:
            raise ValueError(f"text_dim {self.text_dim} must be divisible by text_heads {self.text_heads}")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout is a probability in [0, 1), got {self.caption_dropout}")


@register("t2i", TextToImageConfig)
class TextToImage(RasterAR):
    conditions = "captions"  # what its training batches carry instead of class labels (token_cache.training_data)

    @property
    def prefix_len(self) -> int:
        return self.cfg.max_words

    def make_condition(self, cfg):
        self.vocabulary = Vocabulary(cfg.words)
        self.text_encoder = TextEncoder(len(cfg.words), cfg.max_words, cfg.text_dim, cfg.text_depth, cfg.text_heads,
                                        cfg.frozen_words, cfg.dropout)
        self.caption_embedder = CaptionEmbedder(cfg.text_dim, cfg.dim, cfg.max_words, cfg.caption_dropout)

    @property
    def null_class(self) -> int:
        return NULL  # a row of NULL ids is the null caption (Generator.sampling appends one per caption)

    def condition(self, captions):
        """Word ids (B, T) or Captions(features, mask) -> (prefix tokens (B, T, dim), key mask (B, T): True = may be
        attended to). A null row (all NULL) reads the learned null caption, seen whole; in training a random share
        of the captions is dropped to it."""
        if isinstance(captions, Captions):
            features, mask, null = captions.features, captions.mask, ~captions.mask.any(1)
        else:
            features, mask, null = self.text_encoder(captions), caption_mask(captions), (captions == NULL).all(1)
        null = self.caption_embedder.drop(null)
        return self.caption_embedder(features, null), mask | null[:, None]

    def condition_mask(self, captions):
        if isinstance(captions, Captions):
            return captions.mask | ~captions.mask.any(1, keepdim=True)  # a null row is seen whole
        return caption_mask(captions) | (captions == NULL).all(1, keepdim=True)

    def with_null(self, captions):
        """Guidance's batch: the captions, then the null caption for each (word ids: rows of NULL)."""
        return captions.with_null() if isinstance(captions, Captions) else super().with_null(captions)

    def check_condition(self, captions, batch: int, values: bool = True):
        T, V = self.cfg.max_words, len(self.cfg.words)
        if isinstance(captions, Captions):
            f, m = captions.features, captions.mask
            if f.shape != (batch, T, self.cfg.text_dim) or m.shape != (batch, T) or m.dtype != torch.bool:
                raise ValueError(f"Captions from an external encoder must be features ({batch}, {T}, "
                                 f"{self.cfg.text_dim}) and a bool mask ({batch}, {T}), got {tuple(f.shape)} and "
                                 f"{m.dtype} {tuple(m.shape)} (text_dim must be the encoder's width)")
            return
        if captions.dtype != torch.long or captions.shape != (batch, T):
            raise ValueError(f"expected captions as word ids, a LongTensor ({batch}, {T}) (model.encode_prompts "
                             f"makes them), got {captions.dtype} {tuple(captions.shape)}")
        if values and captions.numel() and (captions.min() < 0 or captions.max() >= V):
            raise ValueError(f"caption ids must lie in [0, {V}) (this model's vocabulary), got "
                             f"[{int(captions.min())}, {int(captions.max())}]")

    def encode_prompts(self, prompts) -> torch.Tensor:
        """Strings -> word ids (B, max_words), left-padded. A word the model never saw is read as <unk> and said
        in a warning (it is not dropped silently: the picture will not show it)."""
        ids, unknown = self.vocabulary.encode(list(prompts) if not isinstance(prompts, str) else [prompts],
                                              self.cfg.max_words)
        missing = sorted({w for words in unknown for w in words})
        if missing:
            warnings.warn(f"{len(missing)} word(s) this model never saw in a training caption, read as <unk>: "
                          f"{', '.join(missing)}", UserWarning, stacklevel=3)
        return ids.to(self.device)

    def check_labels(self, labels) -> torch.Tensor:
        """What generate() conditions on: prompts (strings), word ids (B, max_words), or Captions from another
        encoder."""
        if isinstance(labels, Captions):
            self.check_condition(labels, len(labels))
            if not labels.mask.any(1).all():
                raise ValueError("a caption to sample for has no visible token (an all-False mask row is the null "
                                 "caption, guidance's)")
            return labels.to(self.device)
        if isinstance(labels, str) or (isinstance(labels, (list, tuple)) and labels and
                                       all(isinstance(p, str) for p in labels)):
            return self.encode_prompts(labels)
        ids = torch.as_tensor(labels, device=self.device)
        if ids.ndim != 2 or ids.is_floating_point():
            raise ValueError(f"a t2i model is conditioned on captions: give prompts (a list of strings) or word ids "
                             f"(B, {self.cfg.max_words}), got {ids.dtype} {tuple(ids.shape)}")
        ids = ids.long()
        self.check_condition(ids, ids.shape[0])
        if ids.numel() and ((ids == PAD).all(1) | (ids == NULL).any(1)).any():
            raise ValueError("a caption to sample for has no words, or holds <null> (the null caption is "
                             "guidance's, not a prompt)")
        return ids

    @torch.no_grad()
    def generate(self, labels=None, options=None, *, prompts=None, generator=None, trace=None, prefix=None,
                 **overrides):
        """Token maps (B, grid, grid) for captions: `prompts=["red apple", ...]` (or the same as `labels`, or word
        ids). The rest is RasterAR.generate's: guidance over the null caption, top-k, KV cache, trace."""
        if (labels is None) == (prompts is None):
            raise ValueError("give the captions once: generate(prompts=[...]) (or as the first argument)")
        return super().generate(prompts if labels is None else labels, options, generator=generator, trace=trace,
                                prefix=prefix, **overrides)


__all__ = ["TextToImageConfig", "TextToImage"]
