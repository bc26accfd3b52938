"""One plain training loop for every model in the course.

    cfg = recipes.get("emoji-vqvae")         # a TrainConfig
    result = train(cfg)                      # -> {"step", "loss", "psnr", ..., "run_dir", "model"}

What it does, top to bottom, so a learner can read it in one go:
- the data order is a pure function of the step (a seeded permutation per epoch, random flips seeded by
  step), so a resumed run sees exactly the batches an uninterrupted run would have seen;
- AdamW, linear warmup then cosine decay, gradient clipping, bf16 autocast on CUDA;
- every `eval_every` steps (rank 0): reconstructions of fixed test images, test metrics, a loss-curve PNG;
- every `ckpt_every` steps and at the end: an atomic checkpoint (model, optimizer, step, config, RNG);
  `resume=True` continues from it with nothing lost;
- under `torchrun` the same code runs DistributedDataParallel (NCCL on GPUs, gloo on CPUs): each rank
  takes its slice of the global batch, gradients are averaged, only rank 0 writes files.
"""

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler, Subset
from tqdm.auto import tqdm

from . import device as best_device
from .autoencoder import VQVAE, VQVAEConfig
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import load_dataset
from .losses import TokenizerLoss
from .metrics import evaluate_tokenizer, psnr
from .msvq import MultiScaleVQVAE, MultiScaleVQVAEConfig
from .raster_ar import RasterAR, RasterARConfig
from .token_cache import load_tokenizer, token_dataset
from .var import VAR, VARConfig
from .viz import plot_curves, save_grid

# Every trainable model kind: its config class and its model class. Later lessons register theirs here.
# Tokenizers train on images; generators (models with a `generate` method) on their tokenizer's token maps.
MODELS = {"vqvae": (VQVAEConfig, VQVAE), "msvqvae": (MultiScaleVQVAEConfig, MultiScaleVQVAE),
          "raster": (RasterARConfig, RasterAR), "var": (VARConfig, VAR)}


def is_generator(kind: str) -> bool:
    return hasattr(MODELS[kind][1], "generate")


@dataclass
class TrainConfig:
    name: str = "run"  # the run's folder: <out_dir>/<name>/
    model: str = "vqvae"  # a key of MODELS
    model_config: VQVAEConfig = field(default_factory=VQVAEConfig)
    dataset: str = "emoji"  # emoji | cifar10 | imagenet64 | folder
    data_root: str = ""  # "" = the repo's data/ folder
    flip: bool = True  # random horizontal flips of training images (generators: flipped copies' tokens)
    tokenizer: str = ""  # generators: the tokenizer's run folder (its token maps are cached there)
    sample_cfg: float = 2.0  # generators: classifier-free guidance scale of the sample grids written at eval
    batch_size: int = 64  # global batch, split evenly over torchrun ranks
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    betas: tuple = (0.9, 0.95)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    perceptual_weight: float = 0.0  # LPIPS term of the tokenizer loss (downloads VGG16 once; GPU recipes: 1.0)
    disc_weight: float = 0.0  # PatchGAN hinge term (GPU recipes: 0.5, as LlamaGen)
    disc_start: int = 0  # step at which the discriminator and its loss switch on
    disc_lr: float = 0.0  # discriminator learning rate; 0 = same as lr
    adaptive_disc_weight: bool = True  # taming's gradient-norm balancing of the GAN term
    max_steps: int = 2000  # training ends here ...
    minutes: float = 0.0  # ... or after this many minutes of training, if > 0 (the LR schedule follows it)
    eval_every: int = 250
    ckpt_every: int = 250
    log_every: int = 10
    eval_batches: int = 4  # test batches used for the periodic metrics (all of them at the end)
    seed: int = 0
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU, where bf16 is usually slower)
    num_workers: int = 0  # data loader workers; 0 is fastest for the in-memory datasets
    device: str = "auto"  # auto | cpu | cuda | mps
    out_dir: str = "runs"

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if isinstance(self.model_config, dict):
            self.model_config = MODELS[self.model][0](**self.model_config)
        self.betas = tuple(self.betas)
        if is_generator(self.model) and not self.tokenizer:
            example = "runs/emoji-msvq" if self.model == "var" else "runs/emoji-vqvae-l2"
            raise ValueError(f"model {self.model!r} generates tokens: set the tokenizer's run folder, "
                             f"e.g. --set tokenizer={example}")

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------ distributed setup

def setup_distributed():
    """-> (rank, world_size, device). Initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, None
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank, local_rank = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return rank, world, torch.device("cuda", local_rank)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))  # ranks share the cores
    return rank, world, torch.device("cpu")


# ---------------------------------------------------------------------------- data order = f(step)

class StepBatches(Sampler):
    """Yields the index list of this rank's part of the global batch for step, step + 1, ... forever.

    Epoch e is a permutation drawn from seed + e; step s takes the next `batch_size` indices of it
    (the last incomplete batch of an epoch is dropped). Rank r takes the r-th contiguous slice.
    """

    def __init__(self, n, batch_size, seed=0, start_step=0, rank=0, world=1):
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} must be divisible by the number of processes {world}")
        if n < batch_size:
            raise ValueError(f"the dataset has {n} images, fewer than one batch of {batch_size}; "
                             f"lower batch_size (--set batch_size=...)")
        self.n, self.batch_size, self.seed, self.start_step = n, batch_size, seed, start_step
        self.rank, self.world = rank, world
        self.steps_per_epoch = n // batch_size
        self._epoch, self._perm = None, None  # the current epoch's permutation, drawn once

    def indices(self, step):
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
        batch = self._perm[i * self.batch_size:(i + 1) * self.batch_size]
        local = self.batch_size // self.world
        return batch[self.rank * local:(self.rank + 1) * local].tolist()

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.indices(step)
            step += 1

    def __len__(self):  # infinite in spirit; DataLoader only needs a number
        return 1 << 62


def flip_batch(images, step, seed, rank, world):
    """Flip half the images, chosen by a generator seeded by the step (over the global batch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    mask = torch.rand(images.shape[0] * world, generator=g) < 0.5
    mask = mask[rank * images.shape[0]:(rank + 1) * images.shape[0]].to(images.device)
    return torch.where(mask[:, None, None, None], images.flip(-1), images)


# --------------------------------------------------------------------------------------- helpers

def build_model(cfg: TrainConfig) -> torch.nn.Module:
    return MODELS[cfg.model][1](cfg.model_config)


class GeneratorLoss(torch.nn.Module):
    """A generator's `loss(tokens, labels)` as a forward call: DDP averages the gradients of what runs inside
    the forward of the module it wraps."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens, labels):
        return self.model.loss(tokens, labels)


def compute_loss(model, images, labels, loss_fn=None, step=0, discriminator=None):
    """The scalar to minimise, the numbers to log, and the reconstructions, for one batch.
    `model` (and `discriminator`) may be wrapped in DDP; `loss_fn` adds the perceptual and GAN terms.
    For a generator (a GeneratorLoss), `images` are token maps and there are no reconstructions."""
    if isinstance(unwrap(model), GeneratorLoss):
        loss, metrics = model(images, labels)
        return loss, {**metrics, "total": loss.item()}, None
    recon, losses, stats = model(images)
    metrics = {k: v.item() for k, v in losses.items()}
    metrics.update({k: v.item() for k, v in stats.items()})
    total = losses["total"]
    if loss_fn is not None:
        total, extra = loss_fn.generator_loss(images, recon, losses, step, unwrap(model).decoder.conv_out.weight,
                                              discriminator)
        metrics.update(extra, total=total.item())
    return total, metrics, recon


def lr_at(cfg: TrainConfig, step: int, elapsed: float) -> float:
    """Linear warmup, then cosine from lr to lr * min_lr_ratio over max_steps (or the time budget)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    if cfg.minutes > 0:
        progress = max(progress, elapsed / (60 * cfg.minutes))
    progress = min(1.0, progress)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def read_log(path: Path, upto_step=None) -> list:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if upto_step is None or r["step"] <= upto_step]


def unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


def restore(ckpt_path, cfg, model, opt, disc=None, opt_d=None, dev="cpu"):
    """Load a run's checkpoint into the freshly built model and optimizers; -> (step, elapsed seconds).
    Refuses, with the way out, a checkpoint of another model or of an older, incompatible minivar."""
    ckpt = load_checkpoint(ckpt_path, map_location=dev)
    saved, run_dir = ckpt["config"], ckpt_path.parent
    try:
        saved_model_config = MODELS[saved["model"]][0](**saved["model_config"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{ckpt_path} holds a model this version of minivar does not know ({e}); "
                              f"delete {run_dir} and train again") from None
    if saved["model"] != cfg.model or saved_model_config != cfg.model_config:
        raise ValueError(f"{ckpt_path} was trained with model {saved['model']} {saved['model_config']}, "
                         f"which differs from the requested one; resume with the same recipe and --set "
                         f"options, or start a new run (--set name=...)")
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt_path} does not fit this version of minivar's {cfg.model} ({e}); "
                              f"delete {run_dir} and train again") from None
    opt.load_state_dict(ckpt["optimizer"])
    if disc is not None:
        disc.load_state_dict(ckpt["discriminator"])
        opt_d.load_state_dict(ckpt["optimizer_d"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    return ckpt["step"], ckpt["elapsed"]


# ------------------------------------------------------------------------------------------ the loop

def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train `cfg` to its step or time budget. With resume=True, continue from <run_dir>/ckpt.pt if it exists
    (and return at once if that run is already finished). Returns the final metrics and the model."""
    rank, world, dev = setup_distributed()
    dev = dev or (best_device() if cfg.device == "auto" else torch.device(cfg.device))
    torch.manual_seed(cfg.seed)
    run_dir, ckpt_path, log_path = cfg.run_dir, cfg.run_dir / "ckpt.pt", cfg.run_dir / "metrics.jsonl"

    model = build_model(cfg).to(dev)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]  # no weight decay on norms and biases
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)
    loss_fn, disc, opt_d = None, None, None
    if cfg.perceptual_weight > 0 or cfg.disc_weight > 0:
        loss_fn = TokenizerLoss(cfg.perceptual_weight, cfg.disc_weight, cfg.disc_start,
                                cfg.adaptive_disc_weight).to(dev)
        disc = loss_fn.discriminator
        if disc is not None:  # its own optimizer: it maximises what the autoencoder minimises
            opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr or cfg.lr, betas=cfg.betas)
    step, elapsed = 0, 0.0
    if ckpt_path.exists():
        if not resume:
            raise FileExistsError(f"{run_dir} already holds a run: pass --resume (resume=True) to continue it, "
                                  f"or choose another name (--set name=...)")
        step, elapsed = restore(ckpt_path, cfg, model, opt, disc, opt_d, dev)
    elif rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        log_path.unlink(missing_ok=True)
    if rank == 0:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        records = read_log(log_path, upto_step=step)  # drop lines logged after the checkpoint we resume from
        log_path.write_text("".join(json.dumps(r) + "\n" for r in records))

    root = cfg.data_root or None
    size = cfg.model_config.image_size
    generator = is_generator(cfg.model)
    if generator:  # token maps, encoded once by the frozen tokenizer and cached beside it
        tokenizer = load_tokenizer(cfg.tokenizer, dev)
        check_tokenizer_fits(cfg, tokenizer)
        attach_tokenizer(model, tokenizer)
        kw = dict(image_size=size, root=root, device=dev, progress=progress and rank == 0)
        train_set = token_dataset(cfg.tokenizer, cfg.dataset, "train", flip=cfg.flip, **kw)
        test_set = token_dataset(cfg.tokenizer, cfg.dataset, "test", flip=False, **kw)
    else:
        train_set = load_dataset(cfg.dataset, "train", image_size=size, root=root)
        test_set = load_dataset(cfg.dataset, "test", image_size=size, root=root)
    sampler = StepBatches(len(train_set), cfg.batch_size, cfg.seed, step, rank, world)
    batches = iter(DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                              pin_memory=dev.type == "cuda"))
    test_loader = DataLoader(test_set, batch_size=64, shuffle=False)
    if not generator:  # reconstructions of fixed test images at every eval, spread over the classes
        picks = torch.linspace(0, len(test_set) - 1, min(16, len(test_set))).long().tolist()
        fixed = torch.stack([test_set[i][0] for i in picks]).to(dev)
    else:  # eval sample grid: one column per class (at most 16), two rows
        n_cls = min(16, cfg.model_config.num_classes)
        sample_labels = torch.arange(n_cls, device=dev).repeat(2)
        # periodic test loss on a fixed random subset (test splits are sorted by class), the final one on all
        subset = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(cfg.seed))
        quick_loader = DataLoader(Subset(test_set, subset[:cfg.eval_batches * 64].tolist()), batch_size=64)

    def wrap(m):
        return DistributedDataParallel(m, device_ids=[dev.index] if dev.type == "cuda" else None) if world > 1 else m
    ddp = wrap(GeneratorLoss(model) if generator else model)
    ddp_disc = wrap(disc) if disc is not None else None
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and dev.type == "cuda")

    def done(step, elapsed):
        stop = step >= cfg.max_steps or (cfg.minutes > 0 and elapsed >= 60 * cfg.minutes)
        if world > 1:  # every rank must agree, or one would wait forever in the next all-reduce
            flag = torch.tensor([float(stop)], device=dev)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        return stop

    def checkpoint():
        if rank == 0:
            extra = {"discriminator": disc.state_dict(), "optimizer_d": opt_d.state_dict()} if disc is not None else {}
            save_checkpoint({"model": unwrap(model).state_dict(), "optimizer": opt.state_dict(), "step": step,
                             "elapsed": elapsed, "config": cfg.to_dict(),
                             "rng": {"torch": torch.get_rng_state()}, **extra}, ckpt_path)

    def evaluate_generator(final=False):
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad(), amp:
            for tokens, labels in test_loader if final else quick_loader:
                loss, _ = model.loss(tokens.to(dev), labels.to(dev))
                total, count = total + loss.item() * len(tokens), count + len(tokens)
            g = torch.Generator(dev).manual_seed(cfg.seed)  # the same noise at every eval: comparable grids
            images = decode_generated(tokenizer, model.generate(sample_labels, cfg_scale=cfg.sample_cfg, generator=g))
        model.train()
        save_grid(run_dir / "samples.png", images, nrow=n_cls)
        save_grid(run_dir / "eval" / f"step_{step:07d}.png", images, nrow=n_cls)
        plot_curves(read_log(log_path), keys=("loss",), path=run_dir / "loss.png", title=cfg.name)
        return {"test_loss": total / max(1, count)}

    def evaluate(final=False):
        if generator:
            return evaluate_generator(final)
        m = unwrap(model)
        with amp:
            ev = evaluate_tokenizer(m, test_loader, dev, None if final else cfg.eval_batches)
            recon = m(fixed)[0].float()
        m.train()
        grid = torch.cat([fixed, recon])  # top row: test images, bottom row: their reconstructions
        save_grid(run_dir / "reconstructions.png", grid, nrow=len(fixed))
        save_grid(run_dir / "eval" / f"step_{step:07d}.png", grid, nrow=len(fixed))  # the history
        records = read_log(log_path)
        plot_curves(records, keys=("loss", "recon"), path=run_dir / "loss.png", title=cfg.name)
        return {f"test_{k}": v for k, v in ev.items()}

    model.train()
    # With a time budget the bar counts seconds of training, otherwise steps.
    timed = cfg.minutes > 0
    # (a finished timed run resumes with elapsed past the budget: tqdm's notebook bar cannot start beyond its total)
    bar = tqdm(total=60 * cfg.minutes if timed else cfg.max_steps,
               initial=min(elapsed, 60 * cfg.minutes) if timed else step,
               unit="s" if timed else "step", disable=not progress or rank != 0, desc=cfg.name, mininterval=1.0,
               dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}" if timed else None)
    last_ckpt, images_seen, t_start, between_steps = step, 0, time.time(), True
    try:
        while not done(step, elapsed):
            t0 = time.time()
            images, labels = next(batches)
            images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
            if cfg.flip and not generator:
                images = flip_batch(images, step, cfg.seed, rank, world)
            lr = lr_at(cfg, step, elapsed)
            for group in opt.param_groups:
                group["lr"] = lr
            with amp:
                loss, metrics, recon = compute_loss(ddp, images, labels, loss_fn, step, ddp_disc)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            between_steps = False  # from here until `step += 1`, weights and step count disagree
            if disc is not None and loss_fn.gan_active(step):  # the discriminator's turn, on detached images
                with amp:
                    d_loss, d_metrics = loss_fn.discriminator_loss(images, recon, step, ddp_disc)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                metrics.update(d_metrics)
            opt.step()
            step += 1
            between_steps = True
            elapsed += time.time() - t0
            images_seen += images.shape[0] * world
            bar.update(min(time.time() - t0, bar.total - bar.n) if timed else 1)
            if rank == 0:
                record = {"step": step, "loss": metrics["total"], **metrics, "lr": lr,
                          "grad_norm": grad_norm.item(), "elapsed": round(elapsed, 2)}
                if step % cfg.eval_every == 0:
                    record.update(evaluate())
                if step % cfg.log_every == 0 or step % cfg.eval_every == 0:
                    extra = {} if generator else {"usage": f"{metrics['usage']:.2f}"}
                    bar.set_postfix(step=step, loss=f"{metrics['total']:.4f}", **extra)
                    with open(log_path, "a") as fh:
                        fh.write(json.dumps(record) + "\n")
            if step - last_ckpt >= cfg.ckpt_every:
                checkpoint()
                last_ckpt = step
    except KeyboardInterrupt:
        # Ctrl-C, or the notebook's stop button: keep what was trained (when we stopped between two steps).
        if between_steps and step > last_ckpt:
            checkpoint()
            print(f"\ninterrupted: saved {ckpt_path} at step {step}; continue with --resume (resume=True)")
        raise
    finally:
        bar.close()
    if step != last_ckpt or not ckpt_path.exists():
        checkpoint()

    result = {"step": step, "elapsed": elapsed, "run_dir": str(run_dir)}
    if images_seen:
        result["images_per_s"] = images_seen / max(1e-9, time.time() - t_start)
    if rank == 0:
        records = read_log(log_path)
        if records:
            result["loss"] = records[-1]["loss"]
        result.update(evaluate(final=True))
        (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    if world > 1:
        dist.barrier()
    result["model"] = unwrap(model).eval()
    return result


def decode_generated(tokenizer, generated) -> torch.Tensor:
    """A generator's output (a token map, or VAR's list of maps per scale) -> images in [-1, 1]."""
    if isinstance(generated, (list, tuple)):
        return tokenizer.decode_scales(list(generated)).float().clamp(-1, 1)
    return tokenizer.decode(generated).float().clamp(-1, 1)


def attach_tokenizer(model, tokenizer):
    """VAR builds its inputs (and its samples) with its tokenizer's quantizer; raster models need nothing."""
    if hasattr(model, "attach_quantizer"):
        model.attach_quantizer(tokenizer.quantizer)
    return model


def check_tokenizer_fits(cfg: TrainConfig, tokenizer):
    """A generator's vocabulary and grid (or scales) must match its tokenizer's codebook and token maps."""
    mc, tc = cfg.model_config, tokenizer.cfg
    if mc.vocab_size != tc.codebook_size:
        raise ValueError(f"the tokenizer {cfg.tokenizer} has {tc.codebook_size} codes but the generator's "
                         f"vocab_size is {mc.vocab_size}; --set vocab_size={tc.codebook_size}")
    multiscale = hasattr(tc, "scales")
    if hasattr(mc, "scales") != multiscale:
        raise ValueError(f"{cfg.model} needs a {'multi-scale' if hasattr(mc, 'scales') else 'single-scale'} tokenizer "
                         f"(an {'msvqvae' if hasattr(mc, 'scales') else 'vqvae'} run), but {cfg.tokenizer} is not one")
    if multiscale and (tuple(mc.scales) != tuple(tc.scales) or mc.code_dim != tc.embed_dim):
        raise ValueError(f"the tokenizer {cfg.tokenizer} has scales {tc.scales} and codes of dimension {tc.embed_dim}; "
                         f"--set scales={','.join(map(str, tc.scales))} --set code_dim={tc.embed_dim}")
    side = tc.latent_size
    if hasattr(mc, "grid") and mc.grid != side:
        raise ValueError(f"the tokenizer {cfg.tokenizer} makes {side}x{side} token maps but the generator's grid "
                         f"is {mc.grid}; --set grid={side}")


def load_run(run_dir, map_location="cpu"):
    """A finished (or checkpointed) run -> (model in eval mode, its TrainConfig, its tokenizer or None)."""
    ckpt_path = Path(run_dir) / "ckpt.pt" if Path(run_dir).is_dir() else Path(run_dir)
    if not ckpt_path.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt_path}; train the run first (python -m minivar train ...)")
    saved = load_checkpoint(ckpt_path, map_location)["config"]
    if saved.get("model") not in MODELS:
        raise CheckpointError(f"{ckpt_path} holds a model this version of minivar does not know: "
                              f"{saved.get('model')!r}")
    cfg = TrainConfig(**{k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__})
    model = MODELS[cfg.model][1].from_checkpoint(ckpt_path, map_location)
    tokenizer = None
    if is_generator(cfg.model):
        # the tokenizer path is stored as given, relative to where training ran (usually the folder holding
        # runs/); from elsewhere (a notebook in notebooks/), find it relative to the run's out_dir instead
        tok = Path(cfg.tokenizer)
        beside = ckpt_path.parent.parent.parent / tok
        tokenizer = load_tokenizer(beside if not tok.is_absolute() and not tok.exists() and beside.exists() else tok,
                                   map_location)
        attach_tokenizer(model, tokenizer)
    return model, cfg, tokenizer


def batch_for_step(dataset, step, cfg: TrainConfig, rank=0, world=1):
    """This rank's (images, labels) at `step`, exactly as the loop builds them (flips included)."""
    idx = StepBatches(len(dataset), cfg.batch_size, cfg.seed, step, rank, world).indices(step)
    images = torch.stack([dataset[i][0] for i in idx])
    labels = torch.tensor([dataset[i][1] for i in idx])
    flip = cfg.flip and not is_generator(cfg.model)  # a generator's "images" are token rows, flipped when cached
    return (flip_batch(images, step, cfg.seed, rank, world) if flip else images), labels


__all__ = ["TrainConfig", "train", "MODELS", "is_generator", "build_model", "compute_loss", "GeneratorLoss",
           "batch_for_step", "load_run", "attach_tokenizer", "decode_generated", "psnr"]
