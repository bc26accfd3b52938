"""GPU calibration: every GPU recipe's training loop and sampler, measured on the machine this runs on.

    python benchmarks/gpu_calibration.py                                  # every cifar10-* and imagenet64-* recipe
    python benchmarks/gpu_calibration.py cifar10-vqvae cifar10-var       # some of them (a generator's tokenizer too)
    python benchmarks/gpu_calibration.py --device cpu --steps 4 --batch-size 2 cifar10-vqvae cifar10-raster  # CPU check

Why a script of its own: the README's recipe table gives the minutes a GPU recipe takes, and those minutes are
only as good as a measurement of the real loop (`minivar.train.train`: the recipe's model and batch, bf16
autocast, its data loader workers with pinned memory, the PatchGAN phase) on the GPU class a lab will use.

What it does, all in a temporary folder:
1. writes CIFAR-10 and ImageNet 64x64 in their official on-disk formats (python pickle batches; the downsampled
   ImageNet npz batches), filled with random pixels: the files the loaders read on a user's machine, without the
   download. The losses therefore say that the loop learns, nothing about quality;
2. trains each recipe for `--steps` steps through the real loop (a generator on the tokens of its tokenizer's
   calibration run, encoded through the real token cache). A tokenizer's PatchGAN switches on half-way, so both
   of its phases are timed; its LPIPS network has random weights (no download; the cost of a step does not depend
   on the weights' values);
3. reads the loop's own log for images/s over the steady steps (the first `--log-every` steps, which allocate and
   autotune, are left out), the peak GPU memory, the first and last logged loss; a recipe that runs out of memory
   is retried at half the batch, and the row says so;
4. times the frozen tokenizer's encoding (what the token cache does once per dataset) and each generator's
   sampler at batch 64 with its KV cache and default guidance (token maps or latents, then the decoding apart);
5. with --compile RECIPE (default cifar10-var on CUDA), the same training step eager and under torch.compile;
6. prints a table and appends it to <out>/gpu_calibration.csv with the GPU's name, torch, CUDA and the date.
   `recipe_minutes` is the whole recipe implied: steps x batch / images/s per phase, no evaluation.

Wall time is measured here, never asserted in a test (tests/test_benchmarks.py only checks that it runs).
"""

import argparse
import datetime
import functools
import json
import shutil
import tempfile
import time
import traceback
from pathlib import Path

import torch
from common import RESULTS, machine, record

import minivar.train
from minivar import recipes
from minivar.data import load_dataset, write_official_format
from minivar.losses import TokenizerLoss
from minivar.models import Generator
from minivar.token_cache import code_rows, encode_dataset

GPU_RECIPES = [name for name in recipes.RECIPES if name.startswith(("cifar10-", "imagenet64-"))]


# ------------------------------------------------------------------------------------------------ measuring

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(records, start_step, end_step, batch):
    """Images/s between two logged steps, from the loop's own clock (`elapsed` sums the steps' wall time; the
    `.item()` at each log is a sync point, so the figure covers the GPU's work, not just its queueing)."""
    a = next((r for r in records if r["step"] >= start_step), None)
    b = next((r for r in reversed(records) if r["step"] <= end_step), None)
    if a is None or b is None or b["step"] <= a["step"] or b["elapsed"] <= a["elapsed"]:
        return None
    return (b["step"] - a["step"]) * batch / (b["elapsed"] - a["elapsed"])


def recipe_minutes(full: recipes.TrainConfig, rate_plain, rate_gan):
    """The whole recipe at the measured rates: steps before the PatchGAN at one, after it at the other."""
    if not rate_plain:
        return None
    gan_steps = max(0, full.max_steps - full.disc_start) if full.disc_weight > 0 else 0
    seconds = (full.max_steps - gan_steps) * full.batch_size / rate_plain
    if gan_steps:
        seconds += gan_steps * full.batch_size / (rate_gan or rate_plain)
    return seconds / 60


def train_row(name, args, device, root, runs):
    """Train `name` for args.steps steps through the real loop; on running out of memory halve the batch."""
    full = recipes.get(name)
    batch = args.batch_size or full.batch_size
    halved = False
    dataset_root = root if full.dataset in ("cifar10", "imagenet64") else full.data_root
    while True:
        sets = [f"data_root={dataset_root}", f"out_dir={runs}", f"max_steps={args.steps}",
                f"log_every={args.log_every}", f"eval_every={10 ** 9}", f"ckpt_every={10 ** 9}", "ckpt_minutes=0",
                "eval_batches=1", f"batch_size={batch}", f"device={device}", f"name={name}"]
        if full.tokenizer:  # the generator trains on the codes of its tokenizer's calibration run
            sets.append(f"tokenizer={runs / Path(full.tokenizer).name}")
        if full.disc_weight > 0:  # time both phases: the PatchGAN switches on half-way
            sets.append(f"disc_start={args.steps // 2}")
        if args.workers is not None:
            sets.append(f"num_workers={args.workers}")
        cfg = recipes.get(name, sets)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.time()
        try:
            result = minivar.train.train(cfg, progress=False)
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            print(f"  {name}: out of memory at batch {batch}; trying {batch // 2}", flush=True)
            shutil.rmtree(cfg.run_dir, ignore_errors=True)
            batch, halved = batch // 2, True
            continue
        wall = time.time() - t0
        break
    records = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    half = args.steps // 2 if full.disc_weight > 0 else args.steps
    plain = rate(records, args.log_every, half, batch)
    gan = rate(records, half + args.log_every, args.steps, batch) if full.disc_weight > 0 else None
    model = result["model"]
    row = {"recipe": name, "kind": full.model, "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
           "recipe_batch": full.batch_size, "batch": batch, "fits": not halved, "steps": args.steps,
           "images_per_s": round(plain, 1) if plain else "", "gan_images_per_s": round(gan, 1) if gan else "",
           "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else "",
           "loss_first": round(records[0]["loss"], 4), "loss_last": round(records[-1]["loss"], 4),
           "row_seconds": round(wall, 1)}
    if batch == full.batch_size:
        minutes = recipe_minutes(full, plain, gan)
        row["recipe_minutes"] = round(minutes, 1) if minutes else ""
    print(f"  {name}: {row['images_per_s']} img/s"
          + (f" ({row['gan_images_per_s']} with the PatchGAN)" if gan else "")
          + (f", peak {row['peak_gib']} GiB" if row["peak_gib"] != "" else "")
          + f", loss {row['loss_first']} -> {row['loss_last']}", flush=True)
    return row, model, cfg


def encode_rate(model, cfg, root, device, batch_size=256):
    """Images/s of the frozen tokenizer over the training split, as the token cache encodes it (once per dataset)."""
    train_set = load_dataset(cfg.dataset, "train", image_size=cfg.model_config.image_size, root=root)
    model = model.eval()
    encode_dataset(model, torch.utils.data.Subset(train_set, range(min(batch_size, len(train_set)))),
                   batch_size=batch_size, progress=False)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    encode_dataset(model, train_set, batch_size=batch_size, progress=False)
    sync(device)
    return len(train_set) / (time.perf_counter() - t0)


@torch.no_grad()
def sampling_rate(model, device, batch: int, repeats: int = 2):
    """(codes images/s, decode images/s) at `batch`, default guidance, after one untimed call at that batch."""
    labels = torch.arange(batch, device=device) % model.cfg.num_classes
    g = torch.Generator(device).manual_seed(0)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with amp:
        codes = model.generate(labels, generator=g)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            codes = model.generate(labels, generator=g)
        sync(device)
        gen = batch * repeats / (time.perf_counter() - t0)
        model.tokenizer.decode(codes)
        sync(device)
        t0 = time.perf_counter()
        model.tokenizer.decode(codes)
        sync(device)
    return gen, batch / (time.perf_counter() - t0)


def train_step(loss_fn, opt, batch, amp):
    with amp:
        loss, _ = loss_fn(batch, 0.5)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def compile_row(model, cfg, device, steps: int, batch: int):
    """The recipe's training step (loss, backward, AdamW) eager and under torch.compile, on one fixed batch of codes.
    The first two steps of each (compiling, for the compiled one) are timed apart."""
    s = model.tokenizer.code_format()["image_size"]
    with torch.no_grad():
        x = code_rows(model.tokenizer.encode(torch.rand(batch, 3, s, s, device=device) * 2 - 1))
    codes = (x, torch.arange(batch, device=device) % model.cfg.num_classes)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    out = {}
    for variant in ("eager", "compiled"):
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        loss_fn = torch.compile(model.loss) if variant == "compiled" else model.loss
        t0 = time.perf_counter()
        for _ in range(2):
            train_step(loss_fn, opt, codes, amp)
        sync(device)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(loss_fn, opt, codes, amp)
        sync(device)
        out[variant] = (batch * steps / (time.perf_counter() - t0), first)
    return {"recipe": cfg.name, "batch": batch, "eager_images_per_s": round(out["eager"][0], 1),
            "compiled_images_per_s": round(out["compiled"][0], 1),
            "compile_speedup": round(out["compiled"][0] / out["eager"][0], 2),
            "compile_seconds": round(out["compiled"][1], 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipes", nargs="*", default=GPU_RECIPES, help="GPU recipes (default: all of them)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=40, help="training steps per recipe (tokenizers: half with the GAN)")
    p.add_argument("--log-every", type=int, default=5, help="log interval; the first interval is warm-up, untimed")
    p.add_argument("--batch-size", type=int, default=None, help="override every recipe's batch (the CPU check)")
    p.add_argument("--workers", type=int, default=None, help="override the recipes' data loader workers")
    p.add_argument("--images", type=int, default=4096, help="synthetic training images per dataset")
    p.add_argument("--sample-batch", type=int, default=64)
    p.add_argument("--compile", nargs="*", default=None, help="recipes whose step is also timed under torch.compile "
                   "(default: cifar10-var on CUDA, none on CPU)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the results CSV (default benchmarks/results)")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: this script is for a GPU machine; on a CPU check it with "
                         "--device cpu --steps 4 --batch-size 2")
    unknown = [r for r in args.recipes if r not in GPU_RECIPES]
    if unknown:
        raise SystemExit(f"not a GPU recipe: {', '.join(unknown)}; choose from {', '.join(GPU_RECIPES)}")
    if args.steps < 2 * args.log_every:
        raise SystemExit(f"--steps must be at least twice --log-every ({args.log_every}): the first interval is "
                         f"warm-up, and a rate needs one more")
    compile_recipes = args.compile if args.compile is not None else (["cifar10-var"] if device.type == "cuda" else [])
    # a generator needs its tokenizer's calibration run: add missing tokenizers, tokenizers first, recipe order kept
    wanted = set(args.recipes) | {Path(recipes.get(r).tokenizer).name for r in args.recipes if recipes.get(r).tokenizer}
    order = [r for r in GPU_RECIPES if r in wanted and not recipes.get(r).tokenizer] + \
            [r for r in GPU_RECIPES if r in wanted and recipes.get(r).tokenizer]
    # LPIPS with random weights: the VGG16 download is not possible offline and the cost does not depend on values
    minivar.train.TokenizerLoss = functools.partial(TokenizerLoss, lpips_pretrained=False)
    versions = {"cuda": torch.version.cuda or "", "gpu_memory_gib": round(
        torch.cuda.get_device_properties(device).total_memory / 2**30, 1) if device.type == "cuda" else ""}
    csv_path = args.out / "gpu_calibration.csv"

    def keep(what, row, into):  # recorded at once: a run cut short by a time limit keeps the rows it finished
        into.append(row)
        return record(csv_path, [{"what": what, **versions, **row}], device)

    rows, samples, compiled, errors = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root, runs = Path(tmp) / "data", Path(tmp) / "runs"
        n_test = max(256, args.images // 8)
        write_official_format("cifar10", root, args.images, n_test, seed=0)
        write_official_format("imagenet64", root, args.images, n_test, seed=1)
        for name in order:
            print(f"{name} ...", flush=True)
            try:
                row, model, cfg = train_row(name, args, device, root, runs)
                if not isinstance(model, Generator):
                    row["encode_images_per_s"] = round(encode_rate(model, cfg, root, device), 1)
                    print(f"  encoding (token cache): {row['encode_images_per_s']} img/s", flush=True)
                keep("train", row, rows)
                if isinstance(model, Generator):
                    gen, dec = sampling_rate(model, device, args.sample_batch)
                    keep("sample", {"recipe": name, "batch": args.sample_batch,
                                    "guidance": getattr(model.cfg, "guidance", ""), "codes_images_per_s": round(gen, 1),
                                    "decode_images_per_s": round(dec, 1)}, samples)
                    print(f"  sampling at batch {args.sample_batch}: {gen:.1f} img/s (+ decoding {dec:.0f} img/s)",
                          flush=True)
                    if name in compile_recipes:
                        steps = max(4, args.steps // 4)
                        keep("compile", compile_row(model, cfg, device, steps, row["batch"]), compiled)
                        print(f"  torch.compile: {compiled[-1]}", flush=True)
            except Exception as e:  # one recipe that breaks (on CUDA only, say) must not cost the others' rows
                traceback.print_exc()
                keep("error", {"recipe": name, "error": f"{type(e).__name__}: {e}"[:400]}, errors)
            model = None  # before the next, larger one
    print(f"\n{'recipe':<20} {'batch':>5} {'params':>7} {'img/s':>8} {'GAN img/s':>9} {'peak GiB':>8} "
          f"{'loss first -> last':>19} {'recipe min':>10}")
    for r in rows:
        batch = f"{r['batch']}" + ("" if r["fits"] else "*")
        print(f"{r['recipe']:<20} {batch:>5} {r['params_M']:>6}M {r['images_per_s']:>8} {r['gan_images_per_s']:>9} "
              f"{r['peak_gib']:>8} {r['loss_first']:>8} -> {r['loss_last']:<8} {r.get('recipe_minutes', ''):>10}")
    for s in samples:
        print(f"sampling {s['recipe']:<20} batch {s['batch']}: {s['codes_images_per_s']} img/s, "
              f"decoding {s['decode_images_per_s']} img/s")
    for c in compiled:
        print(f"compile {c['recipe']}: eager {c['eager_images_per_s']} img/s, compiled {c['compiled_images_per_s']} "
              f"({c['compile_speedup']}x; compiling took {c['compile_seconds']} s)")
    if any(not r["fits"] for r in rows):
        print("* the recipe's batch ran out of memory; measured at this one (the recipe needs gradient accumulation "
              "or a smaller batch on this GPU)")
    for e in errors:
        print(f"FAILED {e['recipe']}: {e['error']}")
    print(f"{machine(device)} · torch {torch.__version__} · CUDA {versions['cuda'] or '-'} · {datetime.date.today()}")


if __name__ == "__main__":
    main()
