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
Each step minimises an objective with four hooks: `loss(x, labels, progress, step)`, `update(step, amp)` after the
backward pass, `state_dict()` / `load_state_dict()` for the checkpoint. For every model it is the model's own loss
(`ModelObjective`); the GAN of the GPU tokenizer recipes (LPIPS + PatchGAN) is `losses.AdversarialObjective`, whose
update is the discriminator's own step and whose state is the discriminator and its optimizer.
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
from .config import RENAMED, TrainConfig
from .data import StepBatches, flip_batch, preview_batch
from .files import run_lock, write_json
from .losses import AdversarialObjective, TokenizerLoss, no_sync
from .metrics import evaluate_model
from .models import build, model_class, weights_checksum
from .runs import load_tokenizer
from .token_cache import training_data
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


class ModelObjective:
    """What a step minimises for every model: its own loss, through the contract. The adversarial objective of the
    GAN tokenizer recipes (losses.AdversarialObjective) has the same four hooks; this one has nothing of its own to
    update or save."""

    def __init__(self, model, wrap=lambda m: m):
        self.call = wrap(LossCall(model))

    def loss(self, x, labels, progress, step):
        return self.call(x, labels, progress)

    def update(self, step, amp) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict):
        pass

    def no_sync(self):
        return no_sync(self.call)


def make_objective(cfg: TrainConfig, model, dev, wrap):
    """The model's own loss, or (a tokenizer with a perceptual or GAN weight) LPIPS and a PatchGAN around it."""
    if cfg.perceptual_weight == 0 and cfg.disc_weight == 0:
        return ModelObjective(model, wrap)
    terms = TokenizerLoss(cfg.perceptual_weight, cfg.disc_weight, cfg.disc_start, cfg.adaptive_disc_weight).to(dev)
    # the discriminator has its own optimizer: it maximises what the autoencoder minimises
    optimizer = adamw(terms.discriminator, cfg, lr=cfg.disc_lr) if terms.discriminator is not None else None
    return AdversarialObjective(model, terms, optimizer, wrap)


def compute_loss(objective, x, labels, progress, step):
    """One batch's (loss, metrics), from the objective (the seam where tests interrupt or spoil a step)."""
    return objective.loss(x, labels, progress, step)


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

class RunState:
    """What a checkpoint holds beside the config, and what a resume puts back: the weights, the optimizer, the
    objective's own parts (a discriminator and its optimizer), the weights' moving average (cfg.ema_weights > 0: what
    the final metrics, sampling and minivar.load use), the step and the seconds trained."""

    def __init__(self, model, opt, objective, ema_weights: float):
        self.model, self.opt, self.objective = model, opt, objective
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()} \
            if ema_weights else None
        self.step, self.elapsed = 0, 0.0
        self.saved_step, self.saved_time = 0, time.time()  # the last checkpoint's step, and when it was written
        self.mid_step = False  # True while an update is half applied (a checkpoint now would hold half a step)
        # the first step whose loss or gradient was not finite, noted on the device (no sync) and read at log steps
        # and before any checkpoint
        self.first_bad = torch.full((), -1, dtype=torch.long, device=next(model.parameters()).device)

    def note_if_bad(self, loss, grad_norm):
        bad = (self.first_bad < 0) & ~(loss.isfinite() & grad_norm.isfinite())
        self.first_bad = torch.where(bad, self.step, self.first_bad)

    def diverged(self) -> bool:
        return int(self.first_bad.item()) >= 0

    def checkpoint(self, cfg: TrainConfig, extra: dict) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "step": self.step,
                "elapsed": self.elapsed, "config": cfg.to_dict(), "rng": rng_state(), **extra,
                **({"ema": self.ema} if self.ema else {}), **self.objective.state_dict()}

    def load(self, ckpt: dict):
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        for k in self.ema or {}:  # a run that kept no average starts it from the resumed weights
            self.ema[k].copy_(ckpt.get("ema", {}).get(k, self.model.state_dict()[k]))
        self.objective.load_state_dict(ckpt)
        self.step, self.elapsed = ckpt["step"], ckpt["elapsed"]

    def average(self, decay: float):
        """ema <- ema + (1 - d) (weights - ema), d warming up to `decay`: the early weights fade fast."""
        d = min(decay, (1 + self.step) / (10 + self.step))
        torch._foreach_lerp_(list(self.ema.values()), [self.model.state_dict()[k] for k in self.ema], 1.0 - d)


def restore(ckpt_path, cfg: TrainConfig, state: RunState, tokenizer_checksum, dev):
    """Load a run's checkpoint into the freshly built state -> the RNG state to resume with. Refuses, with the way
    out, a checkpoint of another model, of an older minivar, or of another tokenizer."""
    ckpt = load_checkpoint(ckpt_path, map_location=dev)
    saved, run_dir = ckpt["config"], ckpt_path.parent
    if ckpt.get("tokenizer_checksum", tokenizer_checksum) != tokenizer_checksum:
        raise ValueError(f"{run_dir} was trained on other weights of the tokenizer {cfg.tokenizer} than it holds now "
                         f"(it was trained further or replaced), so its codes would mean other images: start this "
                         f"generator afresh (delete {run_dir} or --set name=...), or restore that tokenizer run")
    try:
        saved_model_config = model_class(saved["model"]).config_from(saved["model_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{ckpt_path} holds a model this version of minivar does not know ({e}); "
                              f"delete {run_dir} and train again") from None
    if saved["model"] != cfg.model or saved_model_config != cfg.model_config:
        raise ValueError(f"{ckpt_path} was trained with model {saved['model']} {saved['model_config']}, "
                         f"which differs from the requested one; resume with the same recipe and --set "
                         f"options, or start a new run (--set name=...)")
    check_resume({RENAMED.get(k, k): v for k, v in saved.items()}, cfg.to_dict(), run_dir)  # what it learns from
    # stays (under a field's current name); its budget may change
    try:
        state.load(ckpt)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt_path} does not fit this version of minivar's {cfg.model} ({e}); "
                              f"delete {run_dir} and train again") from None
    return ckpt["rng"]


def evaluate(model, loader, batch, run_dir, step, cfg, amp) -> dict:
    """Test metrics over the loader, a preview picture of the batch, and the loss curve so far (rank 0)."""
    with amp:
        metrics = evaluate_model(model, loader)
        images = model.preview(batch, generator=torch.Generator(model.device).manual_seed(cfg.seed))
    model.train()  # (the periodic evaluation is followed by more steps; the final one sets eval mode after it)
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
    # everything that can refuse the run comes before its folder is made
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ValueError(f"batch_size={cfg.batch_size} must divide into {world} processes x grad_accum="
                         f"{cfg.grad_accum} slices of equal size; --set batch_size=... or grad_accum=...")
    tokenizer = load_tokenizer(cfg, dev) if cfg.tokenizer else None  # generators only
    torch.manual_seed(cfg.seed)  # the model's initial weights depend on the seed alone
    model = build(cfg.model, cfg.model_config, tokenizer).to(dev)
    cfg.model_config = model.cfg  # a generator's config now holds what it read from its tokenizer
    train_set, test_set, flip = training_data(cfg, tokenizer, progress and rank == 0)
    opt = adamw(model, cfg, skip=model.no_weight_decay())
    state = RunState(model, opt, make_objective(cfg, model, dev, distributed(world, dev)), cfg.ema_weights)
    extra = {"tokenizer_checksum": weights_checksum(tokenizer)} if tokenizer is not None else {}
    rng = begin(cfg, state, extra, resume, dev, owner=rank == 0, say=progress and rank == 0)

    loader = DataLoader(train_set, batch_sampler=StepBatches(len(train_set), cfg.batch_size, cfg.seed, state.step,
                                                             rank, world),
                        num_workers=cfg.num_workers, pin_memory=dev.type == "cuda", generator=torch.Generator())
    batches = on_device(iter(loader), dev, state, cfg.seed if flip else None, rank, world)
    quick_loader, test_loader, fixed = test_loaders(cfg, test_set)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and dev.type == "cuda")
    model.train()
    bar = progress_bar(cfg, state, disable=not progress or rank != 0)
    if rng is not None:  # last thing before the first step: nothing above may shift the resumed randomness
        set_rng_state(rng)
    images_seen, t_start = 0, time.time()
    state.saved_time = t_start  # (the wall-clock checkpoints count from the first step)
    stop = StopSignals().install()  # Ctrl-C / SIGTERM: finish the step, then save and stop (below)
    try:
        while not done(cfg, state.step, state.elapsed, world, dev) and stop.signum is None:
            t0 = time.time()
            x, labels = next(batches)
            loss, metrics, lr, grad_norm = take_step(cfg, state, x, labels, amp)
            state.elapsed += time.time() - t0
            images_seen += x.shape[0] * world
            bar.update(min(time.time() - t0, bar.total - bar.n) if cfg.minutes > 0 else 1)
            logged = state.step % cfg.log_every == 0 or state.step % cfg.eval_every == 0
            if logged and state.diverged():
                save(cfg, state, extra, rank)  # every rank (the same all-reduced gradients): it stops with the sentence
            if logged and rank == 0:  # the only place numbers leave the GPU: a sync point, so not every step
                record = {"step": state.step, "loss": loss.item(), **{k: float(v) for k, v in metrics.items()},
                          "lr": lr, "grad_norm": grad_norm.item(), "elapsed": round(state.elapsed, 2)}
                if state.step % cfg.eval_every == 0:
                    record.update(evaluate(model, quick_loader, fixed, cfg.run_dir, state.step, cfg, amp))
                log(record, cfg.run_dir / "metrics.jsonl", bar)
            if state.step - state.saved_step >= cfg.ckpt_every or \
                    time.time() - state.saved_time >= 60 * cfg.ckpt_minutes > 0:
                save(cfg, state, extra, rank)
    except KeyboardInterrupt as e:  # a second Ctrl-C / SIGTERM: stop now
        stop.signum = getattr(e, "signum", signal.SIGINT)
        if state.mid_step:  # caught inside an update: keep the last checkpoint, not half a step
            raise stopped(stop.signum, cfg.run_dir / "ckpt.pt", state.saved_step) from None
    finally:
        bar.close()
        stop.restore()
    if state.step != state.saved_step or not (cfg.run_dir / "ckpt.pt").exists():
        save(cfg, state, extra, rank)
    if stop.signum is not None:
        raise stopped(stop.signum, cfg.run_dir / "ckpt.pt", state.saved_step)
    return finish(cfg, state, images_seen / max(1e-9, time.time() - t_start), test_loader, fixed, amp, rank, world)


def take_step(cfg: TrainConfig, state: RunState, x, labels, amp):
    """One optimizer step on the batch (x, labels): -> (loss, metrics, learning rate, gradient norm), all still on
    the device. From the first change of a weight until the step count moves, state.mid_step is True."""
    lr = lr_at(cfg, state.step, state.elapsed)
    for group in state.opt.param_groups:
        group["lr"] = lr
    state.opt.zero_grad(set_to_none=True)
    loss, metrics = accumulate(cfg, state, x, labels, amp)
    grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip or math.inf)  # 0: no clip
    state.note_if_bad(loss, grad_norm)
    state.mid_step = True
    metrics.update(state.objective.update(state.step, amp))  # the discriminator's turn, once it is on
    state.opt.step()
    if state.ema:
        state.average(cfg.ema_weights)
    state.step += 1
    state.mid_step = False
    return loss, metrics, lr, grad_norm


def accumulate(cfg: TrainConfig, state: RunState, x, labels, amp):
    """The batch's loss and gradients, in cfg.grad_accum slices when the whole batch does not fit the card: each
    slice's mean loss / n, backpropagated, sums to the batch's mean (slices of equal size), and its gradients with
    it; only a memory's worth of one slice's activations is alive at once. Under DDP the ranks average once, at the
    last slice. -> (the batch's loss, its metrics), on the device."""
    n = cfg.grad_accum
    progress = run_progress(cfg, state.step, state.elapsed)
    loss, metrics = 0.0, {}
    for i, (xs, ys) in enumerate(zip(x.tensor_split(n), labels.tensor_split(n))):
        with contextlib.nullcontext() if i == n - 1 else state.objective.no_sync():
            with amp:  # the forward in autocast, the backward outside it (as torch.amp recommends)
                part, m = compute_loss(state.objective, xs, ys, progress, state.step)
            (part / n).backward()
        loss = loss + part.detach() / n
        metrics = {k: metrics.get(k, 0) + v / n for k, v in m.items()}
    return loss, metrics


def save(cfg: TrainConfig, state: RunState, extra: dict, rank: int):
    """Checkpoint the run (rank 0 writes), unless a step went non-finite since the last one: then stop, keeping the
    last good checkpoint, with the sentence that says which step and what to try."""
    if state.diverged():
        ckpt_path = cfg.run_dir / "ckpt.pt"
        raise diverged(int(state.first_bad.item()) + 1, read_log(cfg.run_dir / "metrics.jsonl"), ckpt_path,
                       state.saved_step, cfg.lr)
    if rank == 0:
        save_checkpoint(state.checkpoint(cfg, extra), cfg.run_dir / "ckpt.pt")
    state.saved_step, state.saved_time = state.step, time.time()


def on_device(batches, dev, state: RunState, flip_seed, rank: int, world: int):
    """The loader's batches on the device, flipped (flip_seed not None) by a seed of the step they are drawn for."""
    for x, labels in batches:
        x, labels = x.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
        yield (x if flip_seed is None else flip_batch(x, state.step, flip_seed, rank, world)), labels


def begin(cfg: TrainConfig, state: RunState, extra: dict, resume: bool, dev, owner: bool, say: bool):
    """Resume the run from its checkpoint (-> the RNG state to resume with) or start it (-> None); then the owner
    (rank 0) makes its folder. A run that exists is continued only when asked (resume=True)."""
    rng = None
    if cfg.run_dir.joinpath("ckpt.pt").exists():
        if not resume:
            raise FileExistsError(f"{cfg.run_dir} already holds a run: pass --resume (resume=True) to continue it, "
                                  f"or choose another name (--set name=...)")
        rng = restore(cfg.run_dir / "ckpt.pt", cfg, state, extra.get("tokenizer_checksum"), dev)
    elif resume and say:
        print(f"{cfg.run_dir} holds no checkpoint yet: starting a new run")
    if owner:
        prepare_run_dir(cfg.run_dir, cfg.to_dict(), state.step)
    state.saved_step = state.step  # what the checkpoint on disk holds (if any)
    return rng


def test_loaders(cfg: TrainConfig, test_set):
    """-> (the periodic metrics' loader: a fixed random subset, as test splits are sorted by class; the final
    metrics' loader: all of it; the preview batch). (A loader without its own generator would draw a seed from the
    global RNG, and shift the training randomness.)"""
    subset = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(cfg.seed))
    quick = DataLoader(Subset(test_set, subset[:cfg.eval_batches * 64].tolist()), batch_size=64,
                       generator=torch.Generator())
    return quick, DataLoader(test_set, batch_size=64, generator=torch.Generator()), preview_batch(test_set)


def distributed(world: int, dev):
    """How the loop wraps a module whose gradients every rank must share: DistributedDataParallel under torchrun."""
    def wrap(module):
        if world == 1:
            return module
        return DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None)
    return wrap


def progress_bar(cfg: TrainConfig, state: RunState, disable: bool):
    """Steps, or (with a time budget) seconds of training. (A finished timed run resumes with elapsed past the budget:
    tqdm's notebook bar cannot start beyond its total.)"""
    timed = cfg.minutes > 0
    return tqdm(total=60 * cfg.minutes if timed else cfg.max_steps,
                initial=min(state.elapsed, 60 * cfg.minutes) if timed else state.step,
                unit="s" if timed else "step", disable=disable, desc=cfg.name, mininterval=1.0, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}" if timed else None)


def log(record: dict, log_path, bar):
    bar.set_postfix(step=record["step"], loss=f"{record['loss']:.4f}",
                    **({"usage": f"{record['usage']:.2f}"} if "usage" in record else {}))
    with open(log_path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def finish(cfg: TrainConfig, state: RunState, images_per_s: float, test_loader, fixed, amp, rank: int,
           world: int) -> dict:
    """The end of a run: the averaged weights (if kept) become the model, the final metrics over the whole test
    split (rank 0), result.json, and the model in eval mode."""
    model = state.model
    if state.ema:  # from here on (final metrics, the returned model) the averaged weights; the raw ones are saved
        model.load_state_dict(state.ema, strict=False)
    result = {"step": state.step, "elapsed": state.elapsed, "run_dir": str(cfg.run_dir)}
    if images_per_s:
        result["images_per_s"] = images_per_s
    if rank == 0:
        records = read_log(cfg.run_dir / "metrics.jsonl")
        if records:
            result["loss"] = records[-1]["loss"]
        result.update(evaluate(model, test_loader, fixed, cfg.run_dir, state.step, cfg, amp))
        write_json(cfg.run_dir / "result.json", result)
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


__all__ = ["TrainConfig", "train", "compute_loss", "LossCall", "ModelObjective", "RunState", "make_objective", "lr_at",
           "run_progress", "accumulate", "StepBatches", "TrainingInterrupted"]
