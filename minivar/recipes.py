"""The named training runs (recipes), as data: what each one is, its training settings and its model's config.

    cfg = recipes.get("emoji-vqvae", ["lr=1e-3", "codebook_size=1024"])    # a checked TrainConfig (config.py)

"emoji-*" recipes run on a laptop CPU in minutes; "cifar10-*" and "imagenet64-*" want one GPU. A recipe says what
it is and never what it measured: a shipped run's quality and minutes are in its manifest (minivar/weights/NAME.json,
`minivar.pretrained.manifest(NAME)`), the GPU recipes' speed and memory in benchmarks/results/gpu_calibration.csv,
and the choices the ablation sheets (exercises/ablations/) made in their recorded tables. A generator recipe names its
tokenizer run and leaves the vocabulary, grid and scales out: the loop reads them from the tokenizer
(models.Generator.bind).
"""

from dataclasses import dataclass, field, replace

from .config import TrainConfig, with_overrides


@dataclass(frozen=True)
class Recipe:
    about: str  # what it is and why, in a sentence or two (`python -m minivar train --help` lists them)
    model: str  # the model kind (minivar.models.MODELS)
    train: dict  # TrainConfig fields
    model_config: dict = field(default_factory=dict)  # fields of that kind's config

    def like(self, about: str, model: str = None, model_config: dict = None, **train) -> "Recipe":
        """Another recipe that starts from this one (the same data and losses, say, with another bottleneck)."""
        return replace(self, about=about, model=model or self.model, train={**self.train, **train},
                       model_config=self.model_config if model_config is None else model_config)


# ------------------------------------------------------------------------------- tokenizers

_EMOJI_NET = dict(image_size=32, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1)  # cheap at 32x32 on a CPU
_CIFAR_NET = dict(image_size=32, ch=128, ch_mult=(1, 2, 2), num_res_blocks=2)
_IMAGENET64_NET = dict(image_size=64, ch=128, ch_mult=(1, 1, 2, 2), num_res_blocks=2)
_EMOJI_TRAIN = dict(dataset="emoji", batch_size=64, lr=2e-3, warmup_steps=50, max_steps=1200, eval_every=200,
                    ckpt_every=200)

EMOJI_VQVAE = Recipe(
    "a VQ-VAE on the bundled emoji, 32x32 -> 8x8 tokens of 512 plain codes of dimension 8 (notebook 01; shipped as "
    "pretrained:emoji-vqvae); no perceptual or GAN term: LPIPS needs a download and both cost more than a CPU allows",
    "vqvae", _EMOJI_TRAIN, dict(**_EMOJI_NET, z_channels=64, code_dim=8, codebook_size=512))
EMOJI_VQVAE_L2 = EMOJI_VQVAE.like(
    "notebook 02's finding applied: 1024 l2-normalised codes of dimension 4 (the best fd_emoji of the recorded sweep's "
    "1024-code cells), trained longer; the tokenizer of the emoji raster GPT and RAR (pretrained:emoji-vqvae-l2)",
    max_steps=4000, eval_every=500, ckpt_every=500,
    model_config=dict(**_EMOJI_NET, z_channels=64, code_dim=4, codebook_size=1024, l2_norm=True))
CIFAR10_VQVAE = Recipe(
    "VQGAN on CIFAR-10 with LlamaGen's losses: LPIPS (weight 1) from the start, PatchGAN (weight 0.5) after a third",
    "vqvae", dict(dataset="cifar10", batch_size=128, lr=4e-4, warmup_steps=500, max_steps=30_000, eval_every=2000,
                  ckpt_every=2000, num_workers=4, perceptual_weight=1.0, disc_weight=0.5, disc_start=10_000),
    dict(**_CIFAR_NET, attn=True, z_channels=256, code_dim=8, codebook_size=4096, l2_norm=True))
IMAGENET64_VQVAE = Recipe(
    "VQGAN on ImageNet 64x64, 8x downsampling to 8x8 maps of 16384 l2-normalised codes, LlamaGen's losses",
    "vqvae", dict(dataset="imagenet64", batch_size=128, lr=4e-4, warmup_steps=1000, max_steps=100_000,
                  eval_every=5000, ckpt_every=5000, num_workers=8, perceptual_weight=1.0, disc_weight=0.5,
                  disc_start=30_000),
    dict(**_IMAGENET64_NET, attn=True, z_channels=256, code_dim=8, codebook_size=16384, l2_norm=True))

EMOJI_MSVQ = Recipe(
    "VAR's multi-scale tokenizer on the emoji (notebook 04; pretrained:emoji-msvq): emoji-vqvae's network, scales "
    "1, 2, 3, 4, 6, 8 ending at its 8x8 latent (sides grow 1.3x-2x per scale, as VAR's schedule; 130 tokens)",
    "msvqvae", {**_EMOJI_TRAIN, "max_steps": 4000, "eval_every": 500, "ckpt_every": 500},
    dict(**_EMOJI_NET, z_channels=64, code_dim=8, codebook_size=512, scales=(1, 2, 3, 4, 6, 8)))
CIFAR10_MSVQ = CIFAR10_VQVAE.like(
    "cifar10-vqvae's network and losses with VAR's quantizer (4096 codes of dimension 8, plain lookup, 4 shared Phis)",
    model="msvqvae", model_config=dict(**_CIFAR_NET, attn=True, z_channels=256, code_dim=8, codebook_size=4096,
                                       scales=(1, 2, 3, 4, 6, 8)))
IMAGENET64_MSVQ = IMAGENET64_VQVAE.like(
    "a 4x-downsampling tokenizer: 64x64 images to 16x16 latents, VAR's 256-px token grid, so VAR's own 10-scale "
    "schedule applies unchanged (680 tokens); VAR's 4096 codes of dimension 32 and 4 shared Phis",
    model="msvqvae", model_config=dict(image_size=64, ch=128, ch_mult=(1, 2, 2), num_res_blocks=2, attn=True,
                                       z_channels=256, code_dim=32, codebook_size=4096,
                                       scales=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16)))

EMOJI_KL = Recipe(
    "the continuous tokenizer FlowAR reads (notebook 06; pretrained:emoji-kl): emoji-vqvae's network with a KL "
    "bottleneck, 32x32 -> 8x8 latents of 4 channels scaled to unit std by a factor estimated while it trains",
    "klvae", _EMOJI_TRAIN, dict(**_EMOJI_NET, latent_channels=4))
CIFAR10_KL = CIFAR10_VQVAE.like(
    "cifar10-vqvae's network and losses (LPIPS, PatchGAN) with a KL bottleneck of 8 channels at 8x8",
    model="klvae", model_config=dict(**_CIFAR_NET, encoder_attn=True, latent_channels=8))
IMAGENET64_KL = IMAGENET64_VQVAE.like(
    "64x64 -> 16x16 latents of 16 channels: the latent grid and channels of MAR's KL-16 at 256 px, so FlowAR's own "
    "scales (1, 2, 4, 8, 16) apply",
    model="klvae", model_config=dict(image_size=64, ch=128, ch_mult=(1, 2, 2), num_res_blocks=2, encoder_attn=True,
                                     latent_channels=16))

# ------------------------------------------------------------------------------- generators

# the emoji generators share one optimiser and length, and are about one size (~3 M parameters), so notebooks 05-08
# compare models, not budgets; the 3,290 training emoji are few, hence dropout and the weights' average
_EMOJI_GEN = dict(dataset="emoji", batch_size=64, lr=1e-3, warmup_steps=100, weight_decay=0.05, ema_weights=0.999,
                  max_steps=2000, eval_every=250, ckpt_every=250)
_CIFAR_GEN = dict(dataset="cifar10", batch_size=256, lr=4e-4, warmup_steps=1000, weight_decay=0.05, max_steps=50_000,
                  eval_every=2500, ckpt_every=2500, num_workers=4)  # LlamaGen's AdamW settings
_RAR_B_OPTIMISER = dict(betas=(0.9, 0.96), weight_decay=0.03)  # RAR-B's AdamW, for the GPU RAR recipes
_IMAGENET64_GEN = dict(dataset="imagenet64", batch_size=256, lr=4e-4, warmup_steps=2000, weight_decay=0.05,
                       max_steps=300_000, eval_every=10_000, ckpt_every=5000, num_workers=8)

EMOJI_RASTER = Recipe(
    "a raster-order GPT (LlamaGen) over the shipped emoji-vqvae-l2's 8x8 maps of 1024 codes (notebook 03; "
    "pretrained:emoji-raster): 6 layers of width 192",
    "raster", dict(**_EMOJI_GEN, tokenizer="pretrained:emoji-vqvae-l2"),
    dict(num_classes=9, dim=192, n_layer=6, n_head=6, multiple_of=64, class_dropout=0.1, dropout=0.1, guidance=2.0))
EMOJI_T2I = EMOJI_RASTER.like(
    "LlamaGen's text-to-image at emoji-raster's size and budget: each emoji's name (\"red apple\") in place of its "
    "class, its words through a 2-block text encoder trained with the model, left-padded before the image tokens "
    "(notebook 09; pretrained:emoji-t2i)",
    model="t2i", model_config=dict(dim=192, n_layer=6, n_head=6, multiple_of=64, caption_dropout=0.1, dropout=0.1,
                                   guidance=2.0, text_dim=128, text_depth=2, text_heads=4))
CIFAR10_RASTER = Recipe(
    "a GPT-B-like width over cifar10-vqvae's 8x8 maps of 4096 codes, LlamaGen's optimiser settings",
    "raster", dict(**_CIFAR_GEN, tokenizer="runs/cifar10-vqvae"),
    dict(num_classes=10, dim=512, n_layer=12, n_head=8, multiple_of=256, class_dropout=0.1, dropout=0.1,
         token_dropout=0.1, guidance=2.0))
IMAGENET64_RASTER = Recipe(
    "GPT-B (768 wide, 12 layers) over imagenet64-vqvae's 8x8 maps of 16384 codes, 1000 classes",
    "raster", dict(**_IMAGENET64_GEN, tokenizer="runs/imagenet64-vqvae"),
    dict(num_classes=1000, dim=768, n_layer=12, n_head=12, multiple_of=256, class_dropout=0.1, dropout=0.1,
         token_dropout=0.1, guidance=2.0))

EMOJI_VAR = Recipe(
    "VAR over the shipped emoji-msvq's 6 scales (notebook 05; pretrained:emoji-var): 4 AdaLN blocks of width 192, "
    "about emoji-raster's size, so the two orders compare at equal parameters",
    "var", dict(**_EMOJI_GEN, tokenizer="pretrained:emoji-msvq"),
    dict(num_classes=9, depth=4, dim=192, n_head=4, dropout=0.1, guidance=2.5))
CIFAR10_VAR = Recipe(
    "VAR-d12-like (width 768 = 64 x 12, 12 heads, VAR's drop-path rule 0.1 * 12 / 24) over cifar10-msvq's scales",
    "var", dict(**_CIFAR_GEN, tokenizer="runs/cifar10-msvq"),
    dict(num_classes=10, depth=12, dim=768, n_head=12, drop_path=0.05, guidance=2.5))
IMAGENET64_VAR = Recipe(
    "VAR-d16, the release's smallest model (width 1024, 16 heads, drop-path 0.1 * 16 / 24), over imagenet64-msvq's "
    "10 scales; batch 128 (256 did not fit an H200: gpu_calibration.csv) and VAR's rule lr = 1e-4 * batch / 256 "
    "scaled from 2e-4 at 256; on an 80 GB card --set batch_size=64 --set lr=5e-5",
    "var", {**_IMAGENET64_GEN, "tokenizer": "runs/imagenet64-msvq", "batch_size": 128, "lr": 1e-4,
            "max_steps": 150_000},
    dict(num_classes=1000, depth=16, dim=1024, n_head=16, drop_path=0.1 * 16 / 24, guidance=2.5))

EMOJI_FLOWAR = Recipe(
    "FlowAR over the shipped emoji-kl's 8x8x4 latents (notebook 06; pretrained:emoji-flowar): scales 1-2-4-8, 2 + 2 "
    "AdaLN blocks of width 176 and FlowAR's transformer head, about emoji-var's size; no weights' average (the "
    "shipped run predates the option)",
    "flowar", {**_EMOJI_GEN, "ema_weights": 0.0, "tokenizer": "pretrained:emoji-kl"},
    dict(num_classes=9, dim=176, n_head=4, encoder_depth=2, decoder_depth=2, head="transformer", head_width=128,
         head_depth=2, dropout=0.1, guidance=2.0, sample_steps=25))
CIFAR10_FLOWAR = Recipe(
    "FlowAR-S-like stacks (768 wide, 12 heads) at half its depth over cifar10-kl's 8x8 latents, a head of width 512",
    "flowar", dict(**_CIFAR_GEN, tokenizer="runs/cifar10-kl"),
    dict(num_classes=10, dim=768, n_head=12, encoder_depth=3, decoder_depth=3, head_width=512, head_depth=2,
         guidance=3.0))
IMAGENET64_FLOWAR = Recipe(
    "FlowAR-S (768 wide, 6 + 6 blocks, 12 heads, a transformer head of width 1024 and depth 2) over imagenet64-kl's "
    "16x16 latents, 1000 classes",
    "flowar", dict(**_IMAGENET64_GEN, tokenizer="runs/imagenet64-kl"),
    dict(num_classes=1000, dim=768, n_head=12, encoder_depth=6, decoder_depth=6, head_width=1024, head_depth=2,
         guidance=4.3))

EMOJI_RAR = Recipe(
    "RAR over emoji-raster's tokenizer, at its size, optimiser and length, so the two differ only in the model and "
    "the orders (notebook 07; pretrained:emoji-rar): random orders for the first half, annealed to raster by 3/4 "
    "(RAR-B: epochs 200 -> 300 of 400), sampled with constant guidance (power 0, notebook 07's choice)",
    "rar", dict(**_EMOJI_GEN, tokenizer="pretrained:emoji-vqvae-l2"),
    dict(num_classes=9, dim=160, n_layer=6, n_head=5, class_dropout=0.1, dropout=0.1, attn_dropout=0.1,
         anneal_start=0.5, anneal_end=0.75, guidance=2.0, guidance_power=0.0))
CIFAR10_RAR = Recipe(
    "cifar10-raster's width and depth in RAR's blocks over cifar10-vqvae's maps; RAR-B's optimiser (betas 0.9/0.96, "
    "weight decay 0.03)",
    "rar", {**_CIFAR_GEN, **_RAR_B_OPTIMISER, "tokenizer": "runs/cifar10-vqvae"},
    dict(num_classes=10, dim=512, n_layer=12, n_head=8, guidance=2.0))
IMAGENET64_RAR = Recipe(
    "RAR-B's blocks at half its depth (768 wide, 12 layers, 16 heads) over imagenet64-vqvae's maps; RAR-B's optimiser "
    "and anneal window (RAR-B samples with guidance 16 and power 2.75 at 256 px)",
    "rar", {**_IMAGENET64_GEN, **_RAR_B_OPTIMISER, "tokenizer": "runs/imagenet64-vqvae"},
    dict(num_classes=1000, dim=768, n_layer=12, n_head=16, guidance=4.0, guidance_power=1.0))

RECIPES = {
    "emoji-vqvae": EMOJI_VQVAE, "emoji-vqvae-l2": EMOJI_VQVAE_L2, "cifar10-vqvae": CIFAR10_VQVAE,
    "imagenet64-vqvae": IMAGENET64_VQVAE, "emoji-raster": EMOJI_RASTER, "emoji-t2i": EMOJI_T2I,
    "cifar10-raster": CIFAR10_RASTER,
    "imagenet64-raster": IMAGENET64_RASTER, "emoji-msvq": EMOJI_MSVQ, "emoji-var": EMOJI_VAR,
    "cifar10-msvq": CIFAR10_MSVQ, "cifar10-var": CIFAR10_VAR, "imagenet64-msvq": IMAGENET64_MSVQ,
    "imagenet64-var": IMAGENET64_VAR, "emoji-kl": EMOJI_KL, "emoji-flowar": EMOJI_FLOWAR, "cifar10-kl": CIFAR10_KL,
    "cifar10-flowar": CIFAR10_FLOWAR, "imagenet64-kl": IMAGENET64_KL, "imagenet64-flowar": IMAGENET64_FLOWAR,
    "emoji-rar": EMOJI_RAR, "cifar10-rar": CIFAR10_RAR, "imagenet64-rar": IMAGENET64_RAR,
}

# The demo's VAR (`python -m minivar demo`): emoji-var with these overrides, the choice of ablation sheet 05c (its
# recorded table says why): a smaller network at half the batch makes many more updates in a few minutes, and a short
# warmup with a higher rate suits them.
DEMO_VAR = ["depth=2", "dim=96", "lr=3e-3", "warmup_steps=20", "batch_size=32"]


def get(name: str, overrides=()) -> TrainConfig:
    """The recipe `name` as a TrainConfig, with `overrides` ("key=value" strings, config.with_overrides) applied and
    the whole checked once."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip() == "model" and value.strip() != recipe.model:  # another kind needs another config
            known = ", ".join(n for n, r in RECIPES.items() if r.model == value.strip()) or "none yet"
            raise ValueError(f"--set model={value.strip()} would keep the {recipe.model} recipe's settings; start from "
                             f"a recipe of that model instead (recipes: {known})")
    cfg = TrainConfig(name=name, model=recipe.model, **recipe.train, model_config=dict(recipe.model_config))
    return with_overrides(cfg, overrides) if overrides else cfg


__all__ = ["Recipe", "RECIPES", "DEMO_VAR", "get"]
