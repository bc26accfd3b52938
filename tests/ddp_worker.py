"""Run by tests/test_ddp.py, once under `torchrun --nproc_per_node 2` and once as one plain process.

Saves (rank 0) the gradients of one training batch, whole and in two accumulated slices (grad_accum=2: each rank
keeps its first slice's gradients, no_sync, and the ranks average once at the second), and the weights after a few
steps of train().
"""

import dataclasses
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minivar.data import batch_for_step, load_dataset  # noqa: E402
from minivar.models import build  # noqa: E402
from minivar.train import (  # noqa: E402
    ModelObjective,
    RunState,
    accumulate,
    adamw,
    compute_loss,
    distributed,
    setup_distributed,
    train,
)
from tests.helpers import tiny_train_config  # noqa: E402

out = Path(sys.argv[1])
rank, world, dev = setup_distributed()
cfg = tiny_train_config(out / "runs", batch_size=16, max_steps=4, warmup_steps=1, ckpt_every=2, eval_every=100)

torch.manual_seed(0)
model = build(cfg.model, cfg.model_config)
images, labels = batch_for_step(load_dataset("emoji", "train"), 3, cfg.batch_size, cfg.seed, rank, world, cfg.flip)
objective = ModelObjective(model, distributed(world, dev or torch.device("cpu")))  # as the loop wraps it
loss, _ = compute_loss(objective, images, labels, 0.0, 0)
loss.backward()
if rank == 0:
    torch.save({n: p.grad for n, p in model.named_parameters()}, out / "grads.pt")
model.zero_grad(set_to_none=True)
accumulate(dataclasses.replace(cfg, grad_accum=2), RunState(model, adamw(model, cfg), objective, 0.0), images, labels,
           nullcontext())
if rank == 0:
    torch.save({n: p.grad for n, p in model.named_parameters()}, out / "grads_accum.pt")

result = train(cfg, progress=False)
if rank == 0:
    torch.save(result["model"].state_dict(), out / "weights.pt")
