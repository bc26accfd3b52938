"""One plain training loop for every model in the course.

    cfg = recipes.get("emoji-vqvae")         # a TrainConfig
    result = train(cfg)                      # -> {"step", "loss", "test_psnr", ..., "run_dir", "model"}

The loop knows models only through the contract of models.py: `loss(batch, progress)`, `evaluate(loader)` and
`preview(batch)`; a generator is built bound to its tokenizer and trains on the tokenizer's cached codes.
What it does, top to bottom, so a learner can read it in one go:
- the data order is a pure function of the step (a seeded permutation per epoch, random flips seeded by
  step), so a resumed run sees exactly the batches an uninterrupted run would have seen;
- AdamW, linear warmup then cosine decay, gradient clipping, bf16 autocast on CUDA; numbers are read from the
  GPU (.item()) only when they are logged, every `log_every` steps; optionally a moving average of the weights;
- every `eval_every` steps (rank 0): test metrics, a preview picture (reconstructions or samples), a loss curve;
- every `ckpt_every` steps, every `ckpt_minutes` of wall time, at the end, on Ctrl-C and on SIGTERM (a cluster's
  pre-emption, `docker stop`): an atomic checkpoint (model, optimizer, step, config, RNG state); `resume=True`
  continues from it with nothing lost, bit for bit on the CPU;
- under `torchrun` the same code runs DistributedDataParallel (NCCL on GPUs, gloo on CPUs): each rank
  takes its slice of the global batch, gradients are averaged, only rank 0 writes files.
The one special case is the GAN of the GPU tokenizer recipes (LPIPS + PatchGAN, losses.py): its terms need the
reconstructions themselves, and its discriminator has an optimizer of its own.
"""

import contextlib
import json
import math
import os
import signal
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from . import device_named
from .checkpoint import (
    CheckpointError,
    StopSignals,
    TrainingInterrupted,
    check_resume,
    diverged,
    load_checkpoint,
    prepare_run_dir,
    read_log,
    rng_state,
    save_checkpoint,
    set_rng_state,
    stopped,
)
from .data import StepBatches, flip_batch, preview_batch
from .files import run_lock, write_json
from .losses import TokenizerLoss
from .models import build, model_class, weights_checksum
from .recipes import TrainConfig, load_run, load_tokenizer  # noqa: F401 (load_run: where notebooks find it)
from .token_cache import training_data  # noqa: F401 (where the loop's data come from)
from .viz import plot_curves, save_grid

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


# ------------------------------------------------------------------------------------------- one step

class LossCall(torch.nn.Module):
    """The model's loss as a forward call: DistributedDataParallel averages the gradients of what runs inside the
    forward of the module it wraps."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, labels, progress):
        return self.model.loss((x, labels), progress)


def compute_loss(objective, x, labels, progress, gan=None, step=0, last_layer=None, discriminator=None):
    """-> (loss, metrics, reconstructions or None) for one batch. `objective` is the LossCall (possibly in DDP);
    in the GAN special case it is the tokenizer itself (forward -> reconstructions, losses, stats), and the
    perceptual and adversarial terms are added to its losses."""
    if gan is None:
        loss, metrics = objective(x, labels, progress)
        return loss, metrics, None
    recon, losses, stats = objective(x)
    total, extra = gan.generator_loss(x, recon, losses, step, last_layer, discriminator)
    return total, {**{k: v.detach() for k, v in losses.items() if k != "total"}, **stats, **extra}, recon


def run_progress(cfg: TrainConfig, step: int, elapsed: float, start: int = 0) -> float:
    """How far the run is past step `start`, in [0, 1]: by steps, or by the time budget if that is further along."""
    progress = (step - start) / max(1, cfg.max_steps - start)
    if cfg.minutes > 0:
        progress = max(progress, elapsed / (60 * cfg.minutes))
    return min(1.0, progress)


def lr_at(cfg: TrainConfig, step: int, elapsed: float) -> float:
    """Linear warmup, then cosine from lr to lr * min_lr_ratio over max_steps (or the time budget)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = run_progress(cfg, step, elapsed, start=cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def adamw(module, cfg: TrainConfig, lr=None, skip=frozenset()):
    """AdamW without weight decay on norms and biases (parameters with fewer than 2 dimensions) and on the
    parameters named in `skip` (a model's `no_weight_decay()`: RAR's embedding and position tables, as the release)."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if p.ndim >= 2 and n not in skip]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": [p for n, p in named if p.ndim < 2 or n in skip], "weight_decay": 0.0}],
                             lr=lr or cfg.lr, betas=cfg.betas)


# ---------------------------------------------------------------------------------- files of a run

def restore(ckpt_path, cfg, model, opt, gan_state, tokenizer_checksum, dev, ema=None):
    """Load a run's checkpoint into the freshly built model and optimizers (and the weights' moving average, which
    starts from the resumed weights if the run kept none) -> (step, elapsed seconds, RNG state). Refuses, with the
    way out, a checkpoint of another model, of an older minivar, or of another tokenizer."""
    ckpt = load_checkpoint(ckpt_path, map_location=dev)
    saved, run_dir = ckpt["config"], ckpt_path.parent
    if ckpt.get("tokenizer_checksum", tokenizer_checksum) != tokenizer_checksum:
        raise ValueError(f"{run_dir} was trained on other weights of the tokenizer {cfg.tokenizer} than it holds now "
                         f"(it was trained further or replaced), so its codes would mean other images: start this "
                         f"generator afresh (delete {run_dir} or --set name=...), or restore that tokenizer run")
    try:
        saved_model_config = model_class(saved["model"]).config_class(**saved["model_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{ckpt_path} holds a model this version of minivar does not know ({e}); "
                              f"delete {run_dir} and train again") from None
    if saved["model"] != cfg.model or saved_model_config != cfg.model_config:
        raise ValueError(f"{ckpt_path} was trained with model {saved['model']} {saved['model_config']}, "
                         f"which differs from the requested one; resume with the same recipe and --set "
                         f"options, or start a new run (--set name=...)")
    check_resume(saved, cfg.to_dict(), run_dir)  # what it learns from stays; its budget may change
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt_path} does not fit this version of minivar's {cfg.model} ({e}); "
                              f"delete {run_dir} and train again") from None
    opt.load_state_dict(ckpt["optimizer"])
    for k in ema or {}:
        ema[k].copy_(ckpt.get("ema", {}).get(k, model.state_dict()[k]))
    for name, module in gan_state.items():  # the discriminator and its optimizer
        module.load_state_dict(ckpt[name])
    return ckpt["step"], ckpt["elapsed"], ckpt["rng"]


def evaluate(model, loader, batch, run_dir, step, cfg, amp) -> dict:
    """Test metrics over the loader, a preview picture of the batch, and the loss curve so far (rank 0)."""
    with amp:
        metrics = model.evaluate(loader)
        images = model.preview(batch, generator=torch.Generator(model.device).manual_seed(cfg.seed))
    for path in (run_dir / "preview.png", run_dir / "eval" / f"step_{step:07d}.png"):  # the latest, the history
        save_grid(path, images, nrow=len(batch[1]))
    plot_curves(read_log(run_dir / "metrics.jsonl"), keys=("loss", "recon"), path=run_dir / "loss.png", title=cfg.name)
    return {f"test_{k}": v for k, v in metrics.items()}


# ------------------------------------------------------------------------------------------ the loop

def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train `cfg` to its step or time budget. With resume=True, continue from <run_dir>/ckpt.pt if it exists
    (and return at once if that run is already finished). Returns the final metrics and the model."""
    rank, world, dev = setup_distributed()
    dev = dev or device_named(cfg.device)
    with run_lock(cfg.run_dir) if rank == 0 else contextlib.nullcontext():  # one process owns a run (rank 0 writes)
        return _train(cfg, resume, progress, rank, world, dev)


def _train(cfg: TrainConfig, resume: bool, progress: bool, rank: int, world: int, dev) -> dict:
    run_dir, ckpt_path, log_path = cfg.run_dir, cfg.run_dir / "ckpt.pt", cfg.run_dir / "metrics.jsonl"

    # everything that can refuse the run comes before its folder is made
    tokenizer = load_tokenizer(cfg, dev) if cfg.tokenizer else None  # generators only
    torch.manual_seed(cfg.seed)  # the model's initial weights depend on the seed alone
    model = build(cfg.model, cfg.model_config, tokenizer).to(dev)
    cfg.model_config = model.cfg  # a generator's config now holds what it read from its tokenizer
    train_set, test_set, flip = training_data(cfg, tokenizer, progress and rank == 0)
    opt = adamw(model, cfg, skip=model.no_weight_decay())
    gan, gan_state = None, {}
    if cfg.perceptual_weight > 0 or cfg.disc_weight > 0:  # the special case: LPIPS and a PatchGAN
        gan = TokenizerLoss(cfg.perceptual_weight, cfg.disc_weight, cfg.disc_start, cfg.adaptive_disc_weight).to(dev)
        if gan.discriminator is not None:  # its own optimizer: it maximises what the autoencoder minimises
            opt_d = adamw(gan.discriminator, cfg, lr=cfg.disc_lr)
            gan_state = {"discriminator": gan.discriminator, "optimizer_d": opt_d}
    checksum = weights_checksum(tokenizer) if tokenizer is not None else None
    # a moving average of the weights (cfg.ema > 0): what the final metrics, sampling and minivar.load use
    ema = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()} if cfg.ema else None
    step, elapsed, rng = 0, 0.0, None
    if ckpt_path.exists():
        if not resume:
            raise FileExistsError(f"{run_dir} already holds a run: pass --resume (resume=True) to continue it, "
                                  f"or choose another name (--set name=...)")
        step, elapsed, rng = restore(ckpt_path, cfg, model, opt, gan_state, checksum, dev, ema)
    elif resume and rank == 0 and progress:
        print(f"{run_dir} holds no checkpoint yet: starting a new run")
    if rank == 0:
        prepare_run_dir(run_dir, cfg.to_dict(), step)

    sampler = StepBatches(len(train_set), cfg.batch_size, cfg.seed, step, rank, world)
    batches = iter(DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                              pin_memory=dev.type == "cuda", generator=torch.Generator()))
    # periodic metrics on a fixed random subset (test splits are sorted by class), the final ones on all of it
    subset = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(cfg.seed))
    quick_loader = DataLoader(Subset(test_set, subset[:cfg.eval_batches * 64].tolist()), batch_size=64,
                              generator=torch.Generator())  # (a loader without its own generator draws a seed
    test_loader = DataLoader(test_set, batch_size=64, generator=torch.Generator())  # from the global RNG)
    fixed = preview_batch(test_set)

    def wrap(m):
        return DistributedDataParallel(m, device_ids=[dev.index] if dev.type == "cuda" else None) if world > 1 else m
    objective = wrap(model if gan is not None else LossCall(model))
    discriminator = wrap(gan.discriminator) if gan_state else None
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and dev.type == "cuda")
    extra_state = {"tokenizer_checksum": checksum} if tokenizer is not None else {}

    # a non-finite loss or gradient, noted on the device (no sync) and read at log steps and before any checkpoint
    first_bad = torch.full((), -1, dtype=torch.long, device=dev)

    def checkpoint():
        if int(first_bad.item()) >= 0:
            raise diverged(int(first_bad.item()) + 1, read_log(log_path), ckpt_path, last_ckpt, cfg.lr)
        if rank == 0:
            save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                             "elapsed": elapsed, "config": cfg.to_dict(), "rng": rng_state(), **extra_state,
                             **({"ema": ema} if ema else {}),
                             **{name: m.state_dict() for name, m in gan_state.items()}}, ckpt_path)

    model.train()
    timed = cfg.minutes > 0  # with a time budget the bar counts seconds of training, otherwise steps
    # (a finished timed run resumes with elapsed past the budget: tqdm's notebook bar cannot start beyond its total)
    bar = tqdm(total=60 * cfg.minutes if timed else cfg.max_steps,
               initial=min(elapsed, 60 * cfg.minutes) if timed else step,
               unit="s" if timed else "step", disable=not progress or rank != 0, desc=cfg.name, mininterval=1.0,
               dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}" if timed else None)
    if rng is not None:  # last thing before the first step: nothing above may shift the resumed randomness
        set_rng_state(rng)
    last_ckpt, images_seen, t_start, between_steps = step, 0, time.time(), True
    last_ckpt_time = t_start
    stop = StopSignals().install()  # Ctrl-C / SIGTERM: finish the step, then save and stop (below)
    try:
        while not done(cfg, step, elapsed, world, dev) and stop.signum is None:
            t0 = time.time()
            x, labels = (t.to(dev, non_blocking=True) for t in next(batches))
            if flip:
                x = flip_batch(x, step, cfg.seed, rank, world)
            lr = lr_at(cfg, step, elapsed)
            for group in opt.param_groups:
                group["lr"] = lr
            with amp:
                loss, metrics, recon = compute_loss(objective, x, labels, run_progress(cfg, step, elapsed), gan, step,
                                                    model.last_layer if gan else None, discriminator)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)  # 0: no clip
            first_bad = torch.where((first_bad < 0) & ~(loss.isfinite() & grad_norm.isfinite()), step, first_bad)
            between_steps = False  # from here until `step += 1`, weights and step count disagree
            if gan is not None and gan.gan_active(step):  # the discriminator's turn, on detached images
                with amp:
                    d_loss, d_metrics = gan.discriminator_loss(x, recon, step, discriminator)
                gan_state["optimizer_d"].zero_grad(set_to_none=True)
                d_loss.backward()
                gan_state["optimizer_d"].step()
                metrics.update(d_metrics)
            opt.step()
            if ema:  # ema <- ema + (1 - d) (weights - ema), d warming up to cfg.ema: early weights fade fast
                decay = min(cfg.ema, (1 + step) / (10 + step))
                torch._foreach_lerp_(list(ema.values()), [model.state_dict()[k] for k in ema], 1.0 - decay)
            step += 1
            between_steps = True
            elapsed += time.time() - t0
            images_seen += x.shape[0] * world
            bar.update(min(time.time() - t0, bar.total - bar.n) if timed else 1)
            if (step % cfg.log_every == 0 or step % cfg.eval_every == 0) and int(first_bad.item()) >= 0:
                checkpoint()  # every rank (the same all-reduced gradients): it stops with the sentence
            if rank == 0 and (step % cfg.log_every == 0 or step % cfg.eval_every == 0):
                # the only place numbers leave the GPU: a sync point, so not every step
                record = {"step": step, "loss": loss.item(), **{k: float(v) for k, v in metrics.items()}, "lr": lr,
                          "grad_norm": grad_norm.item(), "elapsed": round(elapsed, 2)}
                if step % cfg.eval_every == 0:
                    record.update(evaluate(model, quick_loader, fixed, run_dir, step, cfg, amp))
                    model.train()
                bar.set_postfix(step=step, loss=f"{record['loss']:.4f}",
                                **({"usage": f"{record['usage']:.2f}"} if "usage" in record else {}))
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
            if step - last_ckpt >= cfg.ckpt_every or time.time() - last_ckpt_time >= 60 * cfg.ckpt_minutes > 0:
                checkpoint()
                last_ckpt, last_ckpt_time = step, time.time()
    except KeyboardInterrupt as e:  # a second Ctrl-C / SIGTERM: stop now
        stop.signum = getattr(e, "signum", signal.SIGINT)
        if not between_steps:  # caught inside an update: keep the last checkpoint, not half a step
            raise stopped(stop.signum, ckpt_path, last_ckpt) from None
    finally:
        bar.close()
        stop.restore()
    if step != last_ckpt or not ckpt_path.exists():
        checkpoint()
        last_ckpt = step
    if stop.signum is not None:
        raise stopped(stop.signum, ckpt_path, last_ckpt)

    if ema:  # from here on (final metrics, the returned model) the averaged weights; the raw ones are saved
        model.load_state_dict(ema, strict=False)
    result = {"step": step, "elapsed": elapsed, "run_dir": str(run_dir)}
    if images_seen:
        result["images_per_s"] = images_seen / max(1e-9, time.time() - t_start)
    if rank == 0:
        records = read_log(log_path)
        if records:
            result["loss"] = records[-1]["loss"]
        result.update(evaluate(model, test_loader, fixed, run_dir, step, cfg, amp))
        write_json(run_dir / "result.json", result)
    if world > 1:
        dist.barrier()
    result["model"] = model.eval()
    return result


def done(cfg: TrainConfig, step: int, elapsed: float, world: int, dev) -> bool:
    """The step or time budget is spent. Under DDP a time budget is rank 0's clock, broadcast (every rank must
    agree, or one would wait forever in the next all-reduce); steps agree by themselves, with no sync."""
    stop = step >= cfg.max_steps or (cfg.minutes > 0 and elapsed >= 60 * cfg.minutes)
    if world > 1 and cfg.minutes > 0:
        flag = torch.tensor([float(stop)], device=dev)
        dist.broadcast(flag, 0)
        stop = bool(flag.item())
    return stop


__all__ = ["TrainConfig", "train", "compute_loss", "LossCall", "load_run", "training_data", "lr_at", "run_progress",
           "StepBatches", "TrainingInterrupted"]
