"""The contract every model of the course implements, the one registry of model kinds, and `load(path)`.

Every model is a tokenizer or a generator. The training loop, the token cache, the command line, the benchmarks
and the notebooks talk to models only through the methods below, so a new model is one new file whose class
subclasses `Tokenizer` or `Generator`, carries `@register("kind", ConfigClass)`, and is imported once in
`minivar/__init__.py` (the registry line).

    all models     loss(batch, progress) -> (loss, metrics)   batch = (x, labels); progress in [0, 1] = how far
                                                               the run is (RAR anneals its orders on it)
                   preview(batch, generator) -> images         2 rows in [-1, 1]: images over their reconstructions,
                                                               or two samples for each of the batch's labels
    tokenizers     encode(images) -> codes                     token maps (B, h, w), per-scale lists, or latents
                   decode(codes) -> images                     what encode returns, back to (B, 3, H, W)
                   code_format() -> dict                       its config's `code_fields`: codebook_size, grid, ...
                   last_layer                                  the decoder's last weight (the GAN's adaptive weight)
    generators     bind(tokenizer)                             the tokenizer is the source of truth for codebook_size,
                                                               grid, scales, code_dim: a generator's config fields
                                                               of the same names are read from it
                   evaluate(loader, max_batches) -> dict       the test loss (a tokenizer's test metrics, PSNR...,
                                                               are metrics.evaluate_tokenizer's: metrics.evaluate_model)
                   options_class                               its SamplingOptions dataclass (sampling.py): every
                                                               knob of its sampler, with help; the CLI's flags
                   generate(labels, options, **overrides)      codes the bound tokenizer's decode takes; overrides
                     -> codes                                  are fields of options (guidance=3.0, top_k=100)

Guidance has one meaning everywhere: logits (or velocities) uncond + s * (cond - uncond); s = 1 is no guidance.
A generator's config field `guidance` is its default s; one GuidanceSchedule (sampling.py) derives an s per step.
Every generate() opens the same way, with `self.sampling(labels, options, **overrides)`: the options resolved and
checked, the labels checked (and the null class appended when guided), eval mode until it returns.

    model = minivar.load("runs/emoji-var")          # any checkpoint: a run folder or its ckpt.pt
    images = model.tokenizer.decode(model.generate(torch.arange(9)))
"""

import contextlib
import dataclasses
import numbers
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn

from .checkpoint import (
    PRETRAINED,
    CheckpointError,
    load_checkpoint,
    shipped_checkpoint,
    shipped_manifest,
    state_checksum,
)
from .sampling import CompiledStep, GuidanceSchedule, SamplingOptions

MODELS = {}  # kind (the name in recipes and checkpoints) -> model class; filled by @register


def register(kind: str, config_class):
    """Class decorator: make a model kind known to the loop, the recipes, the CLI and load()."""
    def add(cls):
        if kind in MODELS and MODELS[kind] is not cls:
            raise ValueError(f"model kind {kind!r} is registered twice ({MODELS[kind].__name__}, {cls.__name__})")
        cls.kind, cls.config_class = kind, config_class
        MODELS[kind] = cls
        return cls
    return add


def model_class(kind: str):
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")
    return MODELS[kind]


class Model(nn.Module):
    kind = None  # set by @register
    config_class = None

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg

    @classmethod
    def config_from(cls, fields: dict):
        """This kind's config from a dict: a recipe's, or a checkpoint's from any version of minivar (a field renamed
        since, listed in the config class's `renamed` as old -> new, takes its new name: `vocab_size` is a generator's
        `codebook_size`, the name its tokenizer gives it)."""
        renamed = getattr(cls.config_class, "renamed", {})
        return cls.config_class(**{renamed.get(k, k): v for k, v in fields.items()})

    def loss(self, batch, progress: float = 0.0):
        """(x, labels) -> (scalar loss to minimise, {name: detached 0-d tensor}); no .item() here: the loop reads
        the numbers only when it logs (a GPU would otherwise wait for the CPU at every step)."""
        raise NotImplementedError

    def preview(self, batch, generator=None) -> torch.Tensor:
        raise NotImplementedError

    def no_weight_decay(self) -> set:
        """Names of parameters the optimizer must not decay, beyond norms and biases (which never are)."""
        return set()

    @classmethod
    def from_checkpoint(cls, path, map_location="cpu"):
        """load(path), refusing a checkpoint of another kind: `VQVAE.from_checkpoint("runs/emoji-vqvae")`."""
        model = load(path, map_location)
        if not isinstance(model, cls):
            raise ValueError(f"{path} holds a {model.kind!r} model, not a {cls.kind or cls.__name__!r} model; "
                             f"minivar.load(path) loads any kind")
        return model

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class Tokenizer(Model):
    """Images <-> codes. Subclasses implement encode, decode, code_format and forward(images) ->
    (reconstructions, {"recon", "vq", "total", ...}, stats); loss, evaluate and preview follow from them."""

    def encode(self, images: torch.Tensor):
        raise NotImplementedError

    def check_images(self, images: torch.Tensor):
        """Float images (B, 3, S, S) in [-1, 1], S = cfg.image_size, finite: anything else is an error naming it."""
        s = self.cfg.image_size
        if images.ndim != 4 or images.shape[1:] != (3, s, s) or not images.is_floating_point():
            raise ValueError(f"expected float images of shape (B, 3, {s}, {s}) in [-1, 1], "
                             f"got {images.dtype} {tuple(images.shape)}")
        if images.is_cuda and self.training:
            return  # reading values would make the CPU wait for the GPU; the dataset loaders make images in range
        if not torch.isfinite(images).all():
            raise ValueError("the images contain NaN or infinite values; check how they were made (a division by "
                             "zero, a failed decode?)")
        low, high = images.min().item(), images.max().item()
        if low < -1.01 or high > 1.01:
            hint = " (pixel values 0..255? use images / 127.5 - 1)" if high > 2 else \
                " (clamp them with .clamp(-1, 1))" if high <= 1.5 and low >= -1.5 else ""
            raise ValueError(f"expected images in [-1, 1], got values in [{low:.3g}, {high:.3g}]{hint}")

    def decode(self, codes) -> torch.Tensor:
        raise NotImplementedError

    code_fields = ("codebook_size", "grid", "code_dim", "image_size")  # what a generator over its codes reads

    def code_format(self) -> dict:
        """What a generator reads from this tokenizer (Generator.bind): its config's `code_fields`, by the same names
        as the generator config's fields they fill."""
        return {name: getattr(self.cfg, name) for name in self.code_fields}

    @property
    def tokenizer(self):
        return self  # the tokenizer that decodes what this model produces: itself

    @property
    def last_layer(self) -> nn.Parameter:
        """The weight the GAN's adaptive weight compares gradients at (taming: the decoder's last conv); each
        tokenizer names its own."""
        raise NotImplementedError(f"{type(self).__name__} names no last_layer, which the GAN's adaptive weight "
                                  f"needs: define it (its decoder's last weight), or train with disc_weight=0")

    def loss(self, batch, progress: float = 0.0):
        images, _ = batch
        _, losses, stats = self(images)
        total = losses["total"]
        return total, {**{k: v.detach() for k, v in losses.items() if k != "total"}, **stats}

    @torch.no_grad()
    def preview(self, batch, generator=None) -> torch.Tensor:
        """Top row: the batch's images; bottom row: their reconstructions."""
        was_training = self.training
        self.eval()
        images = batch[0].to(self.device)
        recon = self.decode(self.encode(images)).float().clamp(-1, 1)
        self.train(was_training)
        return torch.cat([images.float(), recon])


class Generator(Model):
    """Class labels -> codes of a bound tokenizer. Subclasses implement loss and generate, and name in
    `from_tokenizer` the config fields they read from the tokenizer's code_format()."""

    from_tokenizer = ("codebook_size", "grid")
    options_class = SamplingOptions  # a subclass names its own (TokenSampling, FlowARSampling, ...)

    def __init__(self, cfg):
        super().__init__(cfg)
        unset = [f for f in self.from_tokenizer if not getattr(cfg, f)]
        if unset:
            raise ValueError(f"{type(cfg).__name__} leaves {', '.join(unset)} unset: generators read them from their "
                             f"tokenizer; build with minivar.models.build({self.kind!r}, config, tokenizer) "
                             f"(the training loop does), or set them")
        self._tokenizer = None  # kept in a tuple by bind(): not a submodule, not in this model's state dict
        self.trained_on = None  # the weights_checksum of the tokenizer it was trained on, when loaded from a run

    def bind(self, tokenizer):
        """Attach the frozen tokenizer whose codes this model predicts; refuses one that does not fit, or (for a
        model loaded from a run) one with other weights than it was trained on: its codes would mean other images."""
        fit_to_tokenizer(self.kind, self.cfg, self.from_tokenizer, tokenizer, fill=False)
        given = weights_checksum(tokenizer) if self.trained_on else None
        if given and given != self.trained_on:
            raise ValueError(f"this {self.kind} model was trained on a tokenizer with other weights (checksum "
                             f"{self.trained_on}, this one {given}): its codes would decode to "
                             f"other images. Bind the tokenizer it was trained on (minivar.load(run) does), or train "
                             f"the generator again over this one")
        self._tokenizer = (tokenizer,)
        return self

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            raise RuntimeError("bind the tokenizer first: model.bind(tokenizer) (minivar.load binds it for you)")
        return self._tokenizer[0]

    def generate(self, labels, options=None, *, generator=None, trace=None, **overrides):
        """Codes for the class labels (B,), what the bound tokenizer's decode takes. `options` is this model's
        options_class (default: its defaults); keyword overrides set single fields (guidance=3.0). A list given as
        `trace` receives one dict per step of the sampler (its logits, tokens or latents: the pictures' material)."""
        raise NotImplementedError

    @property
    def null_class(self) -> int:
        """The label that means "no class" (the unconditional half of guidance; class dropout in training)."""
        return self.cfg.num_classes

    def sampling_options(self, options=None, **overrides) -> SamplingOptions:
        """`options` (default: the options class's defaults) with the given fields replaced (None = not given), every
        field left None taken from this model's config, each checked: what generate() samples with."""
        cls = self.options_class
        if options is None:
            options = cls()
        elif type(options) is not cls:
            raise ValueError(f"options must be a {cls.__name__} (the sampling options of a {self.kind} model), got "
                             f"{type(options).__name__}")
        unknown = sorted(set(overrides) - set(cls.field_types()))
        if unknown:
            raise ValueError(f"a {self.kind} model does not take {', '.join(unknown)}; its sampling options: "
                             f"{', '.join(cls.field_types())}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return (dataclasses.replace(options, **given) if given else options).resolved(self.cfg)

    def with_null(self, labels):
        """The conditions of a guided batch: the labels, then the null class for each (the unconditional half)."""
        return torch.cat([labels, torch.full_like(labels, self.null_class)])

    def compiled_step(self, name: str = "decode_step"):
        """This generator's step `name` (decode_step: one step of its sampling loop; FlowAR also compiles its
        velocity) compiled by sampling.CompiledStep: once per input shape, kept with the model; the option compile."""
        steps = self.__dict__.setdefault("_compiled_steps", {})
        made_for = (self.device, next(self.parameters()).dtype)  # moved or cast: new graphs and caches
        if name not in steps or steps[name].made_for != made_for:
            steps[name] = CompiledStep(getattr(self, name), self.device, made_for)
        return steps[name]

    def sampling_caches(self, make, compile: bool, batch: int):
        """The KV caches of one generate: make(fixed_address) builds them (KVCaches in a list, or a tuple of lists).
        Compiled, they are the compiled step's own set for this batch size, kept at fixed addresses and emptied."""
        return self.compiled_step().caches(batch, lambda: make(True)) if compile else make(False)

    @contextlib.contextmanager
    def sampling(self, labels, options=None, **overrides):
        """The opening every generate() shares: options resolved and checked, labels checked, and the conditions
        the network reads (the labels, then the null class for each when guided); eval mode inside, the previous
        mode restored after (an error included)."""
        options = self.sampling_options(options, **overrides)
        labels = self.check_labels(labels)
        schedule = options.schedule
        conditions = self.with_null(labels) if schedule.guided else labels
        was_training = self.training
        self.eval()
        try:
            yield Draw(labels, conditions, options, schedule, len(labels))
        finally:
            self.train(was_training)

    @torch.no_grad()
    def evaluate(self, loader, max_batches=None) -> dict:
        """The mean loss over the loader's batches (test cross-entropy, or flow-matching loss)."""
        was_training = self.training
        self.eval()
        total, count = 0.0, 0
        for i, (x, labels) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            loss, _ = self.loss((x.to(self.device), labels.to(self.device)))
            total, count = total + loss.float() * len(x), count + len(x)
        self.train(was_training)
        return {"loss": (total / max(1, count)).item()}

    @torch.no_grad()
    def sample_images(self, labels, batch_size: int = 64, options=None, *, generator=None, progress=False,
                      **overrides) -> torch.Tensor:
        """Images (N, 3, H, W) in [-1, 1] on the CPU for the class labels (N,), drawn batch_size at a time and
        decoded by the tokenizer: what a metric over 1,000 samples needs without holding 1,000 token maps."""
        from tqdm.auto import tqdm
        labels = self.check_labels(labels)
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        options = self.sampling_options(options, **overrides)
        images = []
        for chunk in tqdm(labels.split(batch_size), desc="sampling", disable=not progress):
            x = self.tokenizer.decode(self.generate(chunk, options, generator=generator)).float()
            if not torch.isfinite(x).all():  # NaN would be clamped to nothing and drawn black, without a word
                shown = ", ".join(f"{k}={v}" for k, v in options.changed(self.sampling_options()).items())
                raise ValueError(f"the samples came out as NaN or inf (guidance {options.guidance:g}"
                                 f"{', ' + shown if shown else ''}): the guidance or an option is too extreme for "
                                 f"this model; choose milder values (guidance 1-10)")
            images.append(x.clamp(-1, 1).cpu())
        return torch.cat(images) if images else torch.empty(0, 3, *(2 * [self.tokenizer.cfg.image_size]))

    @torch.no_grad()
    def preview(self, batch, generator=None) -> torch.Tensor:
        """Two samples for each label of the batch (two rows), with the model's default guidance."""
        labels = batch[1].to(self.device)
        labels = torch.cat([labels, labels])  # (class labels (B,) or caption ids (B, T) alike)
        return self.tokenizer.decode(self.generate(labels, generator=generator)).float().clamp(-1, 1)

    def check_labels(self, labels) -> torch.Tensor:
        """Class labels for generate(): integers in [0, num_classes) (the null class is not a class)."""
        labels = torch.as_tensor(labels, device=self.device)
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool or labels.ndim != 1:
            raise ValueError(f"labels must be a 1-D tensor of class indices (integers), got {labels.dtype} "
                             f"{tuple(labels.shape)}; e.g. torch.tensor([0, 3, 5])")
        n = self.cfg.num_classes
        if labels.numel() and (labels.min() < 0 or labels.max() >= n):
            raise ValueError(f"labels must lie in [0, {n}) (this model has {n} classes), got "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        return labels.long()


class Draw(NamedTuple):
    """What Generator.sampling() hands a generate(): the checked labels (B,), the conditions the network reads
    ((B,) or, when guided, (2B,): the labels then the null class), the resolved options and their schedule."""
    labels: torch.Tensor
    conditions: torch.Tensor
    options: SamplingOptions
    schedule: GuidanceSchedule
    batch: int


def fit_to_tokenizer(kind, config, fields, tokenizer, fill=True):
    """Read the generator config's `fields` from the tokenizer's code_format(): an unset field (0 or ()) takes the
    tokenizer's value (fill=True); a field set to another value is an error naming the --set that fixes it."""
    have = tokenizer.code_format()
    updates = {}
    for f in fields:
        if f not in have:
            raise ValueError(f"a {kind} model reads {f} from its tokenizer, but a {tokenizer.kind} tokenizer has "
                             f"none ({', '.join(have)}); train it on another kind of tokenizer")
        mine, theirs = getattr(config, f), have[f]
        if not mine and fill:
            updates[f] = theirs
        elif tuple_or_value(mine) != tuple_or_value(theirs):
            shown = ",".join(map(str, theirs)) if isinstance(theirs, (tuple, list)) else theirs
            raise ValueError(f"the tokenizer has {f} = {shown} but the {kind} model has {mine}: --set {f}={shown} "
                             f"(or leave {f} unset: generators read it from their tokenizer)")
    return dataclasses.replace(config, **updates) if updates else config


def tuple_or_value(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v


def build(kind: str, config, tokenizer=None) -> Model:
    """A fresh model of `kind`; a generator reads its vocabulary, grid, scales... from `tokenizer` and is bound."""
    cls = model_class(kind)
    if tokenizer is None:
        return cls(config)
    config = fit_to_tokenizer(kind, config, cls.from_tokenizer, tokenizer)
    return cls(config).bind(tokenizer)


def weights_checksum(model: nn.Module) -> str:
    """sha256 of every tensor of the state dict (names, shapes, dtypes and bytes): which weights a model holds."""
    return state_checksum(model.state_dict())


def checkpoint_path(path) -> Path:
    """A run folder, a checkpoint file or "pretrained:NAME" (a shipped checkpoint, checked) -> the checkpoint file."""
    if str(path).startswith(PRETRAINED):
        return shipped_checkpoint(str(path))
    path = Path(path)
    return path / "ckpt.pt" if path.is_dir() else path


def resolve_tokenizer(ckpt_path: Path, tokenizer: str):
    """The tokenizer folder a generator run names, as given at training (relative to where training ran, usually
    the folder holding runs/); from elsewhere (a notebook in notebooks/) it is found relative to the run's runs/.
    A shipped tokenizer ("pretrained:NAME") is found wherever minivar is installed."""
    if tokenizer.startswith(PRETRAINED):
        return tokenizer
    tok = Path(tokenizer)
    beside = ckpt_path.parent.parent.parent / tok
    return beside if not tok.is_absolute() and not tok.exists() and beside.exists() else tok


def load(path, map_location="cpu") -> Model:
    """Any minivar checkpoint (a run folder or its ckpt.pt) -> the model in eval mode; a generator comes bound to
    its tokenizer (the run it was trained on), which must still hold the same weights."""
    ckpt_path = checkpoint_path(path)
    if not ckpt_path.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt_path}: train the run first (python -m minivar train ...)")
    ckpt = load_checkpoint(ckpt_path, map_location)
    kind = shipped_manifest(str(path))["kind"] if str(path).startswith(PRETRAINED) else ckpt["config"].get("model")
    if ckpt["config"].get("model") != kind:
        raise CheckpointError(f"{ckpt_path} holds a {ckpt['config'].get('model')} model but its manifest says "
                              f"{kind}: restore both with `git checkout -- {ckpt_path.parent}` or reinstall minivar")
    return model_from_checkpoint(ckpt, ckpt_path, map_location)


def model_from_checkpoint(ckpt: dict, ckpt_path: Path, map_location="cpu") -> Model:
    """The model a loaded checkpoint dict holds (load(), without reading the file again)."""
    saved = ckpt["config"]
    kind = saved.get("model")
    if kind not in MODELS:
        raise CheckpointError(f"{ckpt_path} holds a {kind!r} model, which this version of minivar does not know "
                              f"({', '.join(MODELS)})")
    cls = MODELS[kind]
    try:
        model = cls(cls.config_from(saved["model_config"]))
        model.load_state_dict({**ckpt["model"], **ckpt.get("ema", {})})  # the weights' moving average, if kept
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{ckpt_path} does not fit this version of minivar's {kind} ({e}); train it again "
                              f"with this version") from None
    if isinstance(model, Generator):
        tok_file = checkpoint_path(resolve_tokenizer(ckpt_path, saved["tokenizer"]))  # (a shipped one: checked once)
        if not tok_file.exists():
            raise FileNotFoundError(f"{ckpt_path} was trained on the tokenizer {saved['tokenizer']}, which is not "
                                    f"at {tok_file}: restore that run folder")
        tokenizer = load(tok_file, map_location)
        expected = ckpt.get("tokenizer_checksum")
        if expected and weights_checksum(tokenizer) != expected:
            raise CheckpointError(f"the tokenizer {saved['tokenizer']} holds other weights than the ones {ckpt_path} "
                                  f"was trained on (it was trained further or replaced): train the generator again, "
                                  f"or restore that tokenizer run")
        model.bind(tokenizer.requires_grad_(False))
        model.trained_on = expected  # after bind (checked just above): a later bind() to another one is refused
    return model.to(map_location).eval()


__all__ = ["MODELS", "register", "Model", "Tokenizer", "Generator", "Draw", "build", "load", "model_from_checkpoint",
           "fit_to_tokenizer",
           "weights_checksum", "model_class", "checkpoint_path", "resolve_tokenizer"]
