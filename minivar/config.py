"""What a training run is: `TrainConfig`, checked as a whole when it is made, and `--set key=value` overrides parsed
against its types (and its model config's).

    cfg = TrainConfig(name="mine", model="vqvae", model_config={"codebook_size": 1024})
    cfg = with_overrides(cfg, ["lr=1e-3", "ema_weights=0.999"])      # a new, checked TrainConfig

The named configurations are in recipes.py; this file knows no model by name: a kind's config class comes from the
registry (models.MODELS).
"""

import dataclasses
import math
import numbers
import typing
from dataclasses import asdict, dataclass
from pathlib import Path

from .checkpoint import PRETRAINED
from .models import Generator, checkpoint_path, model_class

RENAMED = {"ema": "ema_weights"}  # saved training-config fields renamed since, old name -> new


@dataclass
class TrainConfig:
    name: str = "run"  # the run's folder: <out_dir>/<name>/
    model: str = "vqvae"  # a model kind of minivar.models.MODELS
    model_config: typing.Any = None  # that kind's config dataclass (MODELS[model].config_class; a dict is converted,
    # None is its defaults)
    dataset: str = "emoji"  # emoji | cifar10 | imagenet64 | folder
    data_root: str = ""  # "" = the repo's data/ folder
    data_limit: int = 0  # > 0: train and test on a fixed random subset of this many images per split (quick runs:
    # tests, smoke checks of a new setting); 0 = every image
    flip: bool = True  # random horizontal flips of training images (generators: flipped copies' codes)
    tokenizer: str = ""  # generators: the tokenizer's run folder (codes cached there), or "pretrained:NAME"
    batch_size: int = 64  # global batch, split evenly over torchrun ranks
    grad_accum: int = 1  # > 1: each step's batch in this many slices, gradients accumulated (the same update in
    # less memory, for a card the batch does not fit; benchmarks/gpu_plan.py says which cards need it)
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    betas: tuple = (0.9, 0.95)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_weights: float = 0.0  # > 0: a moving average of the weights with this decay (e.g. 0.999; it warms up
    # as min(ema_weights, (1 + t) / (10 + t))) is what the final metrics, sampling and load use; the raw weights resume.
    # (Not the VQ codebook's `ema`, a model field: codes updated as moving averages.)
    perceptual_weight: float = 0.0  # LPIPS term of the tokenizer loss (downloads VGG16 once; GPU recipes: 1.0)
    disc_weight: float = 0.0  # PatchGAN hinge term (GPU recipes: 0.5, as LlamaGen)
    disc_start: int = 0  # step at which the discriminator and its loss switch on
    disc_lr: float = 0.0  # discriminator learning rate; 0 = same as lr
    adaptive_disc_weight: bool = True  # taming's gradient-norm balancing of the GAN term
    max_steps: int = 2000  # training ends here ...
    minutes: float = 0.0  # ... or after this many minutes of training, if > 0 (the LR schedule follows it)
    eval_every: int = 250
    ckpt_every: int = 250  # checkpoint every this many steps ...
    ckpt_minutes: float = 5.0  # ... and every this many minutes of wall time (a kill -9 loses at most that; 0: off)
    log_every: int = 10
    eval_batches: int = 4  # test batches used for the periodic metrics (all of them at the end)
    seed: int = 0
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU, where bf16 is usually slower)
    num_workers: int = 0  # data loader workers; 0 is fastest for the in-memory datasets
    device: str = "auto"  # auto | cpu | cuda | mps
    out_dir: str = "runs"

    def __post_init__(self):
        cls = model_class(self.model)  # an unknown kind lists the known ones
        if self.model_config is None:
            self.model_config = cls.config_class()
        if isinstance(self.model_config, dict):
            self.model_config = cls.config_from(self.model_config)
        if type(self.model_config) is not cls.config_class:
            raise ValueError(f"model {self.model!r} takes a {cls.config_class.__name__}, not a "
                             f"{type(self.model_config).__name__}: start from a recipe of that model instead of "
                             f"--set model=...")
        self.betas = tuple(self.betas)
        if issubclass(cls, Generator) and not self.tokenizer:
            example = {"var": "runs/emoji-msvq", "flowar": "runs/emoji-kl"}.get(self.model, "runs/emoji-vqvae-l2")
            raise ValueError(f"model {self.model!r} generates codes: set the tokenizer's run folder, "
                             f"e.g. --set tokenizer={example}")
        if self.tokenizer and not issubclass(cls, Generator):
            raise ValueError(f"model {self.model!r} is a tokenizer, it trains on images: leave tokenizer unset "
                             f"(it names a generator's tokenizer run)")
        self.check_numbers()
        if len(self.name.encode()) > 200:  # file systems stop at 255 bytes a name; the lock file adds a few
            raise ValueError(f"name is {len(self.name.encode())} bytes long; a run folder's name must be at most 200 "
                             f"(--set name=a-shorter-one)")
        if not self.name or self.name in (".", "..") or "/" in self.name or "\\" in self.name:
            raise ValueError(f"name must be a plain folder name (the run goes to <out_dir>/<name>), got {self.name!r}; "
                             f"--set name=my-run (and --set out_dir=... for another parent folder)")
        if self.device not in ("auto", "cpu", "cuda", "mps") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")

    def check_numbers(self):
        """Counts are whole numbers with a floor, rates and weights are numbers >= 0 (lr > 0): one clear line."""
        for key, low in (("batch_size", 1), ("grad_accum", 1), ("max_steps", 0), ("eval_every", 1), ("ckpt_every", 1),
                         ("log_every", 1), ("eval_batches", 1), ("warmup_steps", 0), ("num_workers", 0),
                         ("disc_start", 0), ("seed", 0), ("data_limit", 0)):
            value = getattr(self, key)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                value = int(value)  # numpy integers too, stored as the plain ints a JSON config holds
                setattr(self, key, value)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{key} must be a whole number >= {low}, got {value!r}; --set {key}=...")
        for key in ("lr", "min_lr_ratio", "weight_decay", "grad_clip", "minutes", "ckpt_minutes", "perceptual_weight",
                    "disc_weight", "disc_lr", "ema_weights"):
            value = getattr(self, key)
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                value = float(value) if not isinstance(value, int) else value
                setattr(self, key, value)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= (key == "lr") * 1e-12 \
                    or not math.isfinite(value):
                raise ValueError(f"{key} must be a finite number {'> 0' if key == 'lr' else '>= 0'}, got {value!r}; "
                                 f"--set {key}=...")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"grad_accum={self.grad_accum} must divide batch_size={self.batch_size} (slices of equal "
                             f"size make the same update as the whole batch); --set grad_accum=2 or 4 ...")
        if self.ema_weights >= 1:
            raise ValueError(f"ema_weights is the weights' moving average, a decay in [0, 1) (0 = off; 0.999 "
                             f"averages about the last 1000 steps), got {self.ema_weights}; --set ema_weights=0.999")

    @classmethod
    def from_saved(cls, saved: dict) -> "TrainConfig":
        """The TrainConfig a checkpoint's "config" holds, from any version of minivar: a field renamed since takes
        its new name (`ema` -> `ema_weights`: `ema` is the VQ codebook's), a field this version lacks is left out."""
        saved = {RENAMED.get(k, k): v for k, v in saved.items()}
        return cls(**{k: v for k, v in saved.items() if k in cls.__dataclass_fields__})

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    @property
    def token_cache_dir(self) -> Path:
        """Where a generator's training codes are cached: beside its tokenizer run, or for a shipped tokenizer under
        out_dir (the installed package may be read-only). The cache is keyed by the tokenizer's weights."""
        if self.tokenizer.startswith(PRETRAINED):
            return Path(self.out_dir) / "tokens" / self.tokenizer.removeprefix(PRETRAINED)
        return checkpoint_path(self.tokenizer).parent / "tokens"

    def to_dict(self) -> dict:
        return asdict(self)



def settable_keys(cfg: TrainConfig) -> list:
    model_keys = [f.name for f in dataclasses.fields(cfg.model_config)]
    return [f.name for f in dataclasses.fields(cfg) if f.name != "model_config"] + model_keys


def with_overrides(cfg: TrainConfig, overrides=()) -> TrainConfig:
    """A new TrainConfig: `cfg` with the "key=value" overrides applied (a training field, or a model field as "key" or
    "model.key"; no model config has a field of the training config's names), each parsed against its field's type,
    then made and checked once, as a whole (so the order of the overrides never matters: `dim=64 n_head=2` and
    `n_head=2 dim=64` are the same)."""
    train = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "model_config"}
    model = {f.name: getattr(cfg.model_config, f.name) for f in dataclasses.fields(cfg.model_config)}
    train_fields = {f.name: f for f in dataclasses.fields(cfg) if f.name != "model_config"}
    model_fields = {f.name: f for f in dataclasses.fields(cfg.model_config)}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = (s.strip() for s in item.split("=", 1))
        to_model = key.startswith("model.")  # "model.KEY": the model config's field, said explicitly
        key = key.removeprefix("model.")
        if key == "model" and value != cfg.model:  # another model kind needs another config: another recipe
            raise ValueError(f"--set model={value} would keep the {cfg.model} settings; start from a recipe of that "
                             f"model instead (python -m minivar train --help lists them)")
        if to_model and key not in model_fields:
            raise ValueError(f"the {cfg.model} model's config has no field {key!r}; its fields: "
                             f"{', '.join(model_fields)}")
        if key in train_fields and not to_model:
            target, f = train, train_fields[key]
        elif key in model_fields:
            target, f = model, model_fields[key]
        else:
            renamed = {**RENAMED, **getattr(type(cfg.model_config), "renamed", {})}
            if key in renamed:  # a name from an older minivar (or its notes)
                raise ValueError(f"{key} is called {renamed[key]} now: --set {renamed[key]}={value}")
            raise ValueError(f"unknown key {key!r}; valid keys: {', '.join(settable_keys(cfg))}")
        target[key] = parse_value(value, f.type, key)
    return TrainConfig(**train, model_config=type(cfg.model_config)(**model))


def parse_value(text: str, typ, key: str):
    """Parse `text` as `typ` (int, float, bool, str, tuple of ints); a wrong value names the expected type."""
    typ = typing.get_origin(typ) or typ
    try:
        if typ is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            return int(text)
        if typ is float:
            return float(text)
        if typ is tuple:
            return tuple(int(v) if v.strip().lstrip("-").isdigit() else float(v) for v in text.split(",") if v.strip())
        return text
    except ValueError:
        example = {bool: "true/false", int: "an integer", float: "a number",
                   tuple: "comma-separated numbers, e.g. 1,2,2"}
        raise ValueError(f"{key} expects {example.get(typ, typ.__name__)}, got {text!r}") from None


__all__ = ["TrainConfig", "with_overrides", "settable_keys", "parse_value"]
