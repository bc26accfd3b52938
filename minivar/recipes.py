"""What a training run is (`TrainConfig`), the named ones (recipes), and `--set key=value` overrides checked
against the config's types.

"emoji-*" recipes run on a laptop CPU in minutes; "cifar10-*" and "imagenet64-*" want one GPU.
The GPU recipes' speed, memory and whole-recipe time are measured by benchmarks/gpu_calibration.py and recorded in
benchmarks/results/gpu_calibration.csv (the README's recipe table quotes them); they are not retyped here.
A generator recipe names its tokenizer run and leaves the vocabulary, grid and scales out: the loop reads them
from the tokenizer (models.Generator.bind).
"""

import dataclasses
import math
import numbers
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .autoencoder import VQVAEConfig
from .checkpoint import PRETRAINED, load_checkpoint
from .flowar import FlowARConfig
from .kl_autoencoder import KLAutoencoderConfig
from .models import Generator, checkpoint_path, load, model_class, model_from_checkpoint
from .msvq import MultiScaleVQVAEConfig
from .rar import RARConfig
from .raster_ar import RasterARConfig
from .var import VARConfig


@dataclass
class TrainConfig:
    name: str = "run"  # the run's folder: <out_dir>/<name>/
    model: str = "vqvae"  # a model kind of minivar.models.MODELS
    model_config: VQVAEConfig = field(default_factory=VQVAEConfig)  # that kind's config (a dict is converted)
    dataset: str = "emoji"  # emoji | cifar10 | imagenet64 | folder
    data_root: str = ""  # "" = the repo's data/ folder
    flip: bool = True  # random horizontal flips of training images (generators: flipped copies' codes)
    tokenizer: str = ""  # generators: the tokenizer's run folder (codes cached there), or "pretrained:NAME"
    batch_size: int = 64  # global batch, split evenly over torchrun ranks
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    betas: tuple = (0.9, 0.95)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema: float = 0.0  # > 0: a moving average of the weights with this decay (e.g. 0.999; it warms up as
    # min(ema, (1 + t) / (10 + t))) is what the final metrics, sampling and load use; the raw weights resume
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
        if isinstance(self.model_config, dict):
            self.model_config = cls.config_class(**self.model_config)
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
        for key, low in (("batch_size", 1), ("max_steps", 0), ("eval_every", 1), ("ckpt_every", 1),
                         ("log_every", 1), ("eval_batches", 1), ("warmup_steps", 0), ("num_workers", 0),
                         ("disc_start", 0), ("seed", 0)):
            value = getattr(self, key)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                value = int(value)  # numpy integers too, stored as the plain ints a JSON config holds
                setattr(self, key, value)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{key} must be a whole number >= {low}, got {value!r}; --set {key}=...")
        for key in ("lr", "min_lr_ratio", "weight_decay", "grad_clip", "minutes", "ckpt_minutes", "perceptual_weight",
                    "disc_weight", "disc_lr", "ema"):
            value = getattr(self, key)
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                value = float(value) if not isinstance(value, int) else value
                setattr(self, key, value)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= (key == "lr") * 1e-12 \
                    or not math.isfinite(value):
                raise ValueError(f"{key} must be a finite number {'> 0' if key == 'lr' else '>= 0'}, got {value!r}; "
                                 f"--set {key}=...")
        if self.ema >= 1:
            codebook = " (for the VQ codebook's EMA: --set model.ema=true)" if hasattr(self.model_config, "ema") else ""
            raise ValueError(f"ema is the weights' average, a decay in [0, 1) (0 = off; 0.999 averages about the last "
                             f"1000 steps), got {self.ema}; --set ema=0.999{codebook}")

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


def load_run(run_dir, map_location="cpu"):
    """A finished (or checkpointed) run -> (model in eval mode, its TrainConfig, its tokenizer or None)."""
    path = checkpoint_path(run_dir)
    ckpt = load_checkpoint(path, map_location)
    model = model_from_checkpoint(ckpt, path, map_location)
    cfg = TrainConfig(**{k: v for k, v in ckpt["config"].items() if k in TrainConfig.__dataclass_fields__})
    return model, cfg, model.tokenizer if cfg.tokenizer else None


def load_tokenizer(cfg: TrainConfig, device):
    """A generator's frozen tokenizer, loaded once; a missing run names the recipe that trains it."""
    path = checkpoint_path(cfg.tokenizer)  # a shipped one ("pretrained:NAME") is checked here
    if not path.exists():
        name = path.parent.name
        how = f"`python -m minivar train {name}`" if name in RECIPES else \
            "e.g. `python -m minivar train emoji-vqvae-l2` (`emoji-msvq` for VAR)"
        raise FileNotFoundError(f"no tokenizer checkpoint at {path}: train it first, {how}, "
                                f"or point --set tokenizer=... at a run folder")
    tokenizer = load(path, device)
    if isinstance(tokenizer, Generator):
        raise ValueError(f"{cfg.tokenizer} is a {tokenizer.kind} run, a generator, not a tokenizer: --set tokenizer= "
                         f"names the tokenizer whose codes the generator learns (e.g. pretrained:emoji-msvq for VAR, "
                         f"pretrained:emoji-vqvae-l2 for raster)")
    return tokenizer.requires_grad_(False)


def _emoji_vqvae():
    # Cheap at full resolution (ch=32: ~150 img/s on 2 cores), 32x32 -> 8x8 tokens, 512 codes of dim 8
    # (low-dim codes and lr 2e-3 used the codebook best among plain-VQ settings tried for 300 steps).
    # About 11 minutes on 2 CPU cores (the demo trains the same model for a 3-minute budget). The shipped
    # pretrained:emoji-vqvae (notebook 01) is this run: 22.7 dB, 200 of its 512 codes used.
    # No perceptual or GAN term: LPIPS needs a download and both cost more than the CPU budget allows.
    return TrainConfig(name="emoji-vqvae", dataset="emoji", batch_size=64, lr=2e-3, warmup_steps=50,
                       max_steps=1200, eval_every=200, ckpt_every=200,
                       model_config=VQVAEConfig(image_size=32, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                                                z_channels=64, embed_dim=8, codebook_size=512))


def _emoji_vqvae_l2():
    # Notebook 02's finding applied: 1024 l2-normalised codes of dimension 4 (the best fd_emoji among the
    # 1024-code cells of the recorded sweep, 91% usage after 150 steps vs 4% for plain 64-d codes).
    # The tokenizer for the emoji generators. 4000 steps: test PSNR 26.2 dB, 99% of the codes used (1200 steps gave
    # 24.2 dB). About 35 minutes on 2 CPU cores alone; the shipped `pretrained:emoji-vqvae-l2` is this run.
    cfg = _emoji_vqvae()
    cfg.name, cfg.max_steps, cfg.eval_every, cfg.ckpt_every = "emoji-vqvae-l2", 4000, 500, 500
    cfg.model_config = VQVAEConfig(image_size=32, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=64,
                                   embed_dim=4, codebook_size=1024, l2_norm=True)
    return cfg


def _cifar10_vqvae():
    # One GPU.
    # VQGAN losses as LlamaGen: LPIPS (weight 1) from the start, PatchGAN (weight 0.5) after a third.
    return TrainConfig(name="cifar10-vqvae", dataset="cifar10", batch_size=128, lr=4e-4, warmup_steps=500,
                       max_steps=30_000, eval_every=2000, ckpt_every=2000, num_workers=4,
                       perceptual_weight=1.0, disc_weight=0.5, disc_start=10_000,
                       model_config=VQVAEConfig(image_size=32, ch=128, ch_mult=(1, 2, 2), num_res_blocks=2,
                                                attn=True, z_channels=256, embed_dim=8, codebook_size=4096,
                                                l2_norm=True))


def _imagenet64_vqvae():
    # One GPU.
    return TrainConfig(name="imagenet64-vqvae", dataset="imagenet64", batch_size=128, lr=4e-4,
                       warmup_steps=1000, max_steps=100_000, eval_every=5000, ckpt_every=5000, num_workers=8,
                       perceptual_weight=1.0, disc_weight=0.5, disc_start=30_000,
                       model_config=VQVAEConfig(image_size=64, ch=128, ch_mult=(1, 1, 2, 2), num_res_blocks=2,
                                                attn=True, z_channels=256, embed_dim=8, codebook_size=16384,
                                                l2_norm=True))


def _emoji_raster():
    # Raster-order GPT over the shipped emoji-vqvae-l2's 8x8 maps of 1024 codes (--set tokenizer=runs/... for yours).
    # 6 layers of width 192 (3.0 M parameters): the 3,290 training emoji (x2 flipped) are few, so dropout 0.1;
    # the test loss flattens after ~1500 steps while the train loss keeps falling.
    # About 28 minutes on 2 CPU cores (2000 steps at ~75 img/s). The shipped pretrained:emoji-raster is this run:
    # fd_emoji 1.8 [0.9, 2.6] at guidance 2 with its averaged weights (ema), 1.8 [0.9, 2.8] with its last ones.
    return TrainConfig(name="emoji-raster", model="raster", tokenizer="pretrained:emoji-vqvae-l2", dataset="emoji",
                       batch_size=64, lr=1e-3, warmup_steps=100, weight_decay=0.05, ema=0.999, max_steps=2000,
                       eval_every=250, ckpt_every=250,
                       model_config=RasterARConfig(num_classes=9, dim=192, n_layer=6, n_head=6, multiple_of=64,
                                                   class_dropout=0.1, dropout=0.1, guidance=2.0))


def _cifar10_raster():
    # One GPU. GPT-B-like width over
    # cifar10-vqvae's 8x8 maps of 4096 codes; LlamaGen's optimiser settings (AdamW, wd 0.05, betas 0.9/0.95).
    return TrainConfig(name="cifar10-raster", model="raster", tokenizer="runs/cifar10-vqvae", dataset="cifar10",
                       batch_size=256, lr=4e-4, warmup_steps=1000, weight_decay=0.05, max_steps=50_000,
                       eval_every=2500, ckpt_every=2500, num_workers=4,
                       model_config=RasterARConfig(num_classes=10, dim=512, n_layer=12, n_head=8, multiple_of=256,
                                                   class_dropout=0.1, dropout=0.1, token_dropout=0.1, guidance=2.0))


def _imagenet64_raster():
    # One GPU. GPT-B (768 wide, 12 layers) over
    # imagenet64-vqvae's 8x8 maps of 16384 codes, 1000 classes.
    return TrainConfig(name="imagenet64-raster", model="raster", tokenizer="runs/imagenet64-vqvae",
                       dataset="imagenet64", batch_size=256, lr=4e-4, warmup_steps=2000, weight_decay=0.05,
                       max_steps=300_000, eval_every=10_000, ckpt_every=5000, num_workers=8,
                       model_config=RasterARConfig(num_classes=1000, dim=768, n_layer=12, n_head=12, multiple_of=256,
                                                   class_dropout=0.1, dropout=0.1, token_dropout=0.1, guidance=2.0))


def _emoji_msvq():
    # VAR's multi-scale tokenizer on the emoji: the emoji-vqvae network, scales (1, 2, 3, 4, 6, 8) ending at its
    # 8x8 latent (side lengths grow by 1.3x-2x per scale, as in VAR's schedule; 130 tokens per image).
    # 4000 steps: test PSNR 25.2 dB, 99% of the codes used (1200 steps gave 23.2 dB; the PSNR still rises at the
    # end). About 42 minutes on 2 CPU cores alone (~100 img/s); the shipped `pretrained:emoji-msvq` is this run.
    return TrainConfig(name="emoji-msvq", model="msvqvae", dataset="emoji", batch_size=64, lr=2e-3, warmup_steps=50,
                       max_steps=4000, eval_every=500, ckpt_every=500,
                       model_config=MultiScaleVQVAEConfig(image_size=32, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                                                          z_channels=64, embed_dim=8, codebook_size=512,
                                                          scales=(1, 2, 3, 4, 6, 8)))


def _emoji_var():
    # VAR over the shipped emoji-msvq's 6 scales (--set tokenizer=runs/emoji-msvq for your own): 4 AdaLN blocks of
    # width 192 (2.9 M parameters, about emoji-raster's 3.05 M), so the two can be compared at equal size
    # (notebook 05). About 42 minutes on 2 CPU cores alone (2000 steps at ~50 img/s: 130 tokens per image). The shipped
    # pretrained:emoji-var is this run: fd_emoji 5.9 [4.6, 7.3] at guidance 2.5 with its averaged weights (ema), 6.3
    # [4.8, 7.7] with its last ones; test loss 3.62 against 3.05 in training (it overfits the 3,290 emoji).
    return TrainConfig(name="emoji-var", model="var", tokenizer="pretrained:emoji-msvq", dataset="emoji", batch_size=64,
                       lr=1e-3, warmup_steps=100, weight_decay=0.05, ema=0.999, max_steps=2000, eval_every=250,
                       ckpt_every=250,
                       model_config=VARConfig(num_classes=9, depth=4, dim=192, n_head=4, dropout=0.1, guidance=2.5))


def _cifar10_msvq():
    # One GPU. cifar10-vqvae's network and
    # losses with VAR's quantizer (4096 codes of dim 8, VAR's plain lookup and 4 shared Phis).
    cfg = _cifar10_vqvae()
    cfg.name, cfg.model = "cifar10-msvq", "msvqvae"
    cfg.model_config = MultiScaleVQVAEConfig(image_size=32, ch=128, ch_mult=(1, 2, 2), num_res_blocks=2, attn=True,
                                             z_channels=256, embed_dim=8, codebook_size=4096, scales=(1, 2, 3, 4, 6, 8))
    return cfg


def _cifar10_var():
    # One GPU. VAR-d12-like (width 768 = 64 x 12,
    # 12 heads, VAR's drop-path rule 0.1 * 12 / 24) over cifar10-msvq's scales.
    return TrainConfig(name="cifar10-var", model="var", tokenizer="runs/cifar10-msvq", dataset="cifar10",
                       batch_size=256, lr=4e-4, warmup_steps=1000, weight_decay=0.05, max_steps=50_000,
                       eval_every=2500, ckpt_every=2500, num_workers=4,
                       model_config=VARConfig(num_classes=10, depth=12, dim=768, n_head=12, drop_path=0.05,
                                              guidance=2.5))


def _imagenet64_msvq():
    # One GPU. A 4x-downsampling tokenizer turns
    # 64x64 images into 16x16 latents, VAR's 256-px token grid, so VAR's own 10-scale schedule applies unchanged
    # (680 tokens per image). VAR's 4096 codes of dimension 32 and 4 shared Phis.
    cfg = _imagenet64_vqvae()
    cfg.name, cfg.model = "imagenet64-msvq", "msvqvae"
    cfg.model_config = MultiScaleVQVAEConfig(image_size=64, ch=128, ch_mult=(1, 2, 2), num_res_blocks=2, attn=True,
                                             z_channels=256, embed_dim=32, codebook_size=4096,
                                             scales=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16))
    return cfg


def _imagenet64_var():
    # One GPU. VAR-d16 (VAR's smallest released
    # model: width 1024, 16 heads, drop-path 0.1 * 16 / 24) over imagenet64-msvq's 10 scales, 1000 classes.
    # Batch 128: at 256 its 680 tokens per image ran out of an H200's 140 GB (gpu_calibration.csv); the learning rate
    # follows VAR's rule lr = 1e-4 * batch / 256 scaled from the earlier 2e-4 at 256, and 150k steps (19 M images, 15
    # ImageNet epochs) keep it near a day on that GPU. An 80 GB card: --set batch_size=64 --set lr=5e-5.
    return TrainConfig(name="imagenet64-var", model="var", tokenizer="runs/imagenet64-msvq", dataset="imagenet64",
                       batch_size=128, lr=1e-4, warmup_steps=2000, weight_decay=0.05, max_steps=150_000,
                       eval_every=10_000, ckpt_every=5000, num_workers=8,
                       model_config=VARConfig(num_classes=1000, depth=16, dim=1024, n_head=16, drop_path=0.1 * 16 / 24,
                                              guidance=2.5))


def _emoji_kl():
    # The continuous tokenizer FlowAR reads (notebook 06): emoji-vqvae's network with a KL bottleneck, 32x32 -> 8x8
    # latents of 4 channels, scaled to unit std by a factor estimated while it trains. CPU, like emoji-vqvae.
    return TrainConfig(name="emoji-kl", model="klvae", dataset="emoji", batch_size=64, lr=2e-3, warmup_steps=50,
                       max_steps=1200, eval_every=200, ckpt_every=200,
                       model_config=KLAutoencoderConfig(image_size=32, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                                                        z_channels=4))


def _emoji_flowar():
    # FlowAR over the shipped emoji-kl's 8x8x4 latents (--set tokenizer=runs/emoji-kl for yours): scales 1-2-4-8,
    # 2 + 2 AdaLN blocks of width 176 and FlowAR's transformer head (2 blocks of width 128): 3.0 M parameters, about
    # emoji-var's and emoji-raster's, so the three can be compared at equal size (notebooks 06 and 08). The shipped
    # pretrained:emoji-flowar is this run (no EMA: it was trained before the option existed).
    return TrainConfig(name="emoji-flowar", model="flowar", tokenizer="pretrained:emoji-kl", dataset="emoji",
                       batch_size=64, lr=1e-3, warmup_steps=100, weight_decay=0.05, max_steps=2000, eval_every=250,
                       ckpt_every=250,
                       model_config=FlowARConfig(num_classes=9, dim=176, n_head=4, encoder_depth=2, decoder_depth=2,
                                                 head="transformer", head_width=128, head_depth=2, dropout=0.1,
                                                 guidance=2.0, sample_steps=25))


def _cifar10_kl():
    # One GPU. cifar10-vqvae's network and
    # losses (LPIPS, PatchGAN) with a KL bottleneck of 8 channels at 8x8.
    cfg = _cifar10_vqvae()
    cfg.name, cfg.model = "cifar10-kl", "klvae"
    cfg.model_config = KLAutoencoderConfig(image_size=32, ch=128, ch_mult=(1, 2, 2), num_res_blocks=2,
                                           encoder_attn=True, z_channels=8)
    return cfg


def _cifar10_flowar():
    # One GPU. FlowAR-S-like stacks (768 wide, 12
    # heads) at half its depth over cifar10-kl's 8x8 latents, its transformer head of width 512.
    return TrainConfig(name="cifar10-flowar", model="flowar", tokenizer="runs/cifar10-kl", dataset="cifar10",
                       batch_size=256, lr=4e-4, warmup_steps=1000, weight_decay=0.05, max_steps=50_000,
                       eval_every=2500, ckpt_every=2500, num_workers=4,
                       model_config=FlowARConfig(num_classes=10, dim=768, n_head=12, encoder_depth=3, decoder_depth=3,
                                                 head_width=512, head_depth=2, guidance=3.0))


def _imagenet64_kl():
    # One GPU. 64x64 -> 16x16 latents of 16
    # channels: the latent grid and channels of MAR's KL-16 at 256 px, so FlowAR's own scales (1, 2, 4, 8, 16) apply.
    cfg = _imagenet64_vqvae()
    cfg.name, cfg.model = "imagenet64-kl", "klvae"
    cfg.model_config = KLAutoencoderConfig(image_size=64, ch=128, ch_mult=(1, 2, 2), num_res_blocks=2,
                                           encoder_attn=True, z_channels=16)
    return cfg


def _imagenet64_flowar():
    # One GPU. FlowAR-S (768 wide, 6 + 6 blocks, 12
    # heads, a transformer head of width 1024 and depth 2) over imagenet64-kl's 16x16 latents, 1000 classes.
    return TrainConfig(name="imagenet64-flowar", model="flowar", tokenizer="runs/imagenet64-kl",
                       dataset="imagenet64", batch_size=256, lr=4e-4, warmup_steps=2000, weight_decay=0.05,
                       max_steps=300_000, eval_every=10_000, ckpt_every=5000, num_workers=8,
                       model_config=FlowARConfig(num_classes=1000, dim=768, n_head=12, encoder_depth=6,
                                                 decoder_depth=6, head_width=1024, head_depth=2, guidance=4.3))


def _emoji_rar():
    # RAR over the same (shipped) tokenizer as emoji-raster (emoji-vqvae-l2: 8x8 maps of 1024 codes), at its size (3.2 M
    # parameters: 160 wide, 6 layers, 5 heads of 32 -- adaLN makes RAR's blocks heavier, so it is narrower), its
    # optimiser and its 2000 steps: the two differ only in the model and the orders (notebook 07). Random orders
    # for the first half of the run, annealed to raster by 3/4 (RAR-B: epochs 200 -> 300 of 400).
    # Sampled with constant guidance 2 (power 0): on emoji it scored fd_emoji 2.34 against 2.96 for power 1 (nb 07).
    # The shipped pretrained:emoji-rar is this run: fd_emoji 1.7 [0.9, 2.5] at guidance 2 with its averaged weights.
    return TrainConfig(name="emoji-rar", model="rar", tokenizer="pretrained:emoji-vqvae-l2", dataset="emoji",
                       batch_size=64, lr=1e-3, warmup_steps=100, weight_decay=0.05, ema=0.999, max_steps=2000,
                       eval_every=250, ckpt_every=250,
                       model_config=RARConfig(num_classes=9, dim=160, n_layer=6, n_head=5, class_dropout=0.1,
                                              dropout=0.1, attn_dropout=0.1, anneal_start=0.5, anneal_end=0.75,
                                              guidance=2.0, guidance_power=0.0))


def _cifar10_rar():
    # One GPU. cifar10-raster's width and depth in
    # RAR's blocks, over cifar10-vqvae's 8x8 maps; RAR-B's optimiser (AdamW, betas 0.9/0.96, wd 0.03).
    return TrainConfig(name="cifar10-rar", model="rar", tokenizer="runs/cifar10-vqvae", dataset="cifar10",
                       batch_size=256, lr=4e-4, warmup_steps=1000, betas=(0.9, 0.96), weight_decay=0.03,
                       max_steps=50_000, eval_every=2500, ckpt_every=2500, num_workers=4,
                       model_config=RARConfig(num_classes=10, dim=512, n_layer=12, n_head=8, guidance=2.0))


def _imagenet64_rar():
    # One GPU. RAR-B's blocks at half its depth
    # (768 wide, 12 layers, 16 heads) over imagenet64-vqvae's 8x8 maps of 16384 codes; RAR-B's optimiser and
    # anneal window (1/2 -> 3/4 of the run). RAR-B samples with guidance 16 and power 2.75 at 256 px.
    return TrainConfig(name="imagenet64-rar", model="rar", tokenizer="runs/imagenet64-vqvae",
                       dataset="imagenet64", batch_size=256, lr=4e-4, warmup_steps=2000, betas=(0.9, 0.96),
                       weight_decay=0.03, max_steps=300_000, eval_every=10_000, ckpt_every=5000, num_workers=8,
                       model_config=RARConfig(num_classes=1000, dim=768, n_layer=12, n_head=16, guidance=4.0,
                                              guidance_power=1.0))


# The demo's VAR (`python -m minivar demo`): emoji-var's recipe with these overrides, chosen by ablation sheet 05c.
# Minutes, not quarter hours: a small network (2 blocks of width 96, 0.42 M parameters) at half the batch makes many
# more updates in the same time than emoji-var's 4 x 192, and more updates are what a few minutes are short of; a
# short warmup with a higher rate suits them.
DEMO_VAR = ["depth=2", "dim=96", "lr=3e-3", "warmup_steps=20", "batch_size=32"]

RECIPES = {"emoji-vqvae": _emoji_vqvae, "emoji-vqvae-l2": _emoji_vqvae_l2, "cifar10-vqvae": _cifar10_vqvae,
           "imagenet64-vqvae": _imagenet64_vqvae, "emoji-raster": _emoji_raster, "cifar10-raster": _cifar10_raster,
           "imagenet64-raster": _imagenet64_raster, "emoji-msvq": _emoji_msvq, "emoji-var": _emoji_var,
           "cifar10-msvq": _cifar10_msvq, "cifar10-var": _cifar10_var, "imagenet64-msvq": _imagenet64_msvq,
           "imagenet64-var": _imagenet64_var, "emoji-kl": _emoji_kl, "emoji-flowar": _emoji_flowar,
           "cifar10-kl": _cifar10_kl, "cifar10-flowar": _cifar10_flowar, "imagenet64-kl": _imagenet64_kl,
           "imagenet64-flowar": _imagenet64_flowar, "emoji-rar": _emoji_rar, "cifar10-rar": _cifar10_rar,
           "imagenet64-rar": _imagenet64_rar}


def get(name: str, overrides=()) -> TrainConfig:
    """The recipe `name` with `overrides` ("key=value" strings) applied, then checked as a whole (so the order of
    the overrides never matters: `dim=64 n_head=2` and `n_head=2 dim=64` are the same)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    cfg = RECIPES[name]()
    for item in overrides:
        apply_override(cfg, item)
    cfg.__post_init__()
    cfg.model_config.__post_init__()
    return cfg


def settable_keys(cfg: TrainConfig) -> list:
    model_keys = [f.name for f in dataclasses.fields(cfg.model_config)]
    return [f.name for f in dataclasses.fields(cfg) if f.name != "model_config"] + model_keys


def apply_override(cfg: TrainConfig, item: str):
    """Apply "key=value" to cfg (a training field, or a model field as "key" or "model.key"), type-checked."""
    if "=" not in item:
        raise ValueError(f"--set expects key=value, got {item!r}")
    key, value = (s.strip() for s in item.split("=", 1))
    to_model = key.startswith("model.")  # "model.ema": the model's field where a training field has the same name
    key = key.removeprefix("model.")
    if key == "model" and value != cfg.model:  # another model kind needs another config: another recipe
        known = ", ".join(n for n, r in RECIPES.items() if r().model == value) or "none yet"
        raise ValueError(f"--set model={value} would keep the {cfg.model} recipe's settings; start from a recipe of "
                         f"that model instead (recipes: {known})")
    train_fields = {f.name: f for f in dataclasses.fields(cfg) if f.name != "model_config"}
    model_fields = {f.name: f for f in dataclasses.fields(cfg.model_config)}
    if to_model and key not in model_fields:
        raise ValueError(f"the {cfg.model} model's config has no field {key!r}; its fields: {', '.join(model_fields)}")
    if key in train_fields and not (to_model and key in model_fields):
        target, f = cfg, train_fields[key]
    elif key in model_fields:
        target, f = cfg.model_config, model_fields[key]
    else:
        raise ValueError(f"unknown key {key!r}; valid keys: {', '.join(settable_keys(cfg))}")
    try:
        parsed = parse_value(value, f.type, key)
    except ValueError as e:
        if target is cfg and key in model_fields:  # e.g. ema: the weights' average (training) or the VQ codebook's
            raise ValueError(f"{e}. {key!r} names a training setting here; for the model's own {key!r} write "
                             f"model.{key}={value}") from None
        raise
    setattr(target, key, parsed)  # checked as a whole by get(), after every override


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
