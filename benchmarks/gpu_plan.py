"""The lab plan by arithmetic: what each GPU recipe's step costs, what a card must hold, how long a recipe takes.

    python benchmarks/gpu_plan.py               # every cifar10-* and imagenet64-* recipe -> results/gpu_plan.csv
    python benchmarks/gpu_plan.py cifar10-var   # some of them

A course assistant planning a lab needs two numbers per recipe before booking a GPU: does it fit the card, and
how many hours it takes. Both follow from counts you can check by hand, made here on the CPU in a few seconds per
recipe with the recipe's real model (random weights) and a batch of two images:

- FLOPs per image of one training step: the matrix multiplies, convolutions and attention of the forward and the
  backward pass (torch.utils.flop_counter counts them from the shapes), for a tokenizer with its LPIPS and PatchGAN
  (the discriminator's own step included) once the PatchGAN is on;
- activation memory per image: the bytes of every tensor autograd saves for the backward pass, under the bf16
  autocast the recipes train with (what grows with the batch);
- the memory that does not grow with the batch: 16 bytes per trained parameter (fp32 weights, gradients and
  AdamW's two moments), 4 more with a moving average of the weights (ema_weights), 4 per frozen parameter (the
  tokenizer under a generator, LPIPS's VGG16), 16 per discriminator parameter.

Then, for a card with M bytes and a peak of P bf16 FLOP/s (the vendor's dense tensor-core figure):

    memory(batch)  = fixed + batch x activations x overhead      (overhead: what the allocator and the backward's
                                                                  temporaries add: the median of each family's
                                                                  measured H200 peaks, tokenizers and generators)
    hours          = steps x batch x FLOPs per image / (P x utilisation)

The utilisation is the one the recipe reached on the H200 that benchmarks/gpu_calibration.py measured
(images/s x FLOPs per image / 989 TFLOP/s); a recipe not measured there takes the median of those that were.
Small models keep a GPU waiting on kernel launches, so their utilisation is low, and it is higher on a slower card:
the hours of a slower card are therefore an upper bound. A recipe whose batch does not fit a card gets the
smallest gradient accumulation (`--set grad_accum=N`: the same batch and the same updates in N slices) that does;
the fit takes the larger of the family's overhead and the recipe's own measured one (`fit_overhead`), so a
recipe the formula underestimates is not promised a card it would not fit.

Nothing here is timed; the CSV is a function of the code (and of the recorded calibration).
"""

import argparse
import csv
import functools
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from common import RESULTS, build_recipe_model, latest_rows, record
from torch.utils.flop_counter import FlopCounterMode

from minivar import recipes
from minivar.losses import TokenizerLoss
from minivar.models import Generator
from minivar.token_cache import code_rows
from minivar.train import make_objective

GPU_RECIPES = [name for name in recipes.RECIPES if name.startswith(("cifar10-", "imagenet64-"))]
GIB = 2**30


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float  # what torch.cuda reports as usable: the card's GB in GiB, less what the driver keeps
    bf16_tflops: float  # the vendor's dense bf16 tensor-core peak (without sparsity)


# the classes a course lab meets: a 24 GB card of a hosted notebook or a desktop, and the 80 GB data-centre cards
GPUS = [GPU("L4 24GB", 22.0, 121.0), GPU("RTX 4090 24GB", 23.6, 165.2), GPU("A100 80GB", 79.1, 312.0),
        GPU("H100 SXM 80GB", 79.1, 989.4)]
CALIBRATION = GPU("NVIDIA H200", 139.8, 989.4)  # where benchmarks/gpu_calibration.py measured (its CSV)
HEADROOM = 0.9  # plan to fill 90% of a card: fragmentation and the CUDA context take the rest


# ------------------------------------------------------------------------------------------ counting one step

class SavedBytes:
    """Bytes of the tensors autograd saves for the backward pass, each storage once (views share one), parameters
    left out (they are counted as weights)."""

    def __init__(self, module):
        self.params = {p.untyped_storage().data_ptr() for p in module.parameters()}
        self.storages = {}

    def pack(self, t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.params:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def example_batch(model, tokenizer, batch: int):
    """What the training loop feeds the recipe: images in [-1, 1], or their codes (the token cache's rows)."""
    size = (tokenizer or model).code_format()["image_size"]
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    if tokenizer is not None:
        with torch.no_grad():
            x = code_rows(tokenizer.encode(x))
    return x, torch.zeros(batch, dtype=torch.long)


def count_step(objective, model, x, labels, step: int, amp):
    """-> (FLOPs, saved activation bytes) of one training step at `step` for the batch (x, labels): the loss, its
    backward, and the objective's own update (the discriminator's step). The activations are the larger of the two
    backward passes' (the discriminator's runs after the model's activations are freed)."""
    main = SavedBytes(model)
    flops = FlopCounterMode(display=False)
    with flops:
        with main.hooks(), amp:
            loss, _ = objective.loss(x, labels, 0.5, step)
        loss.backward()
        update = SavedBytes(model)
        with update.hooks():
            objective.update(step, amp)
    model.zero_grad(set_to_none=True)
    return flops.get_total_flops(), max(main.total, update.total)


def tokens_per_image(model, tokenizer) -> int:
    """The positions a generator's transformer reads per image (all scales for VAR and FlowAR), or the codes a
    tokenizer writes per image (a continuous latent's spatial positions, each a vector of channels)."""
    if isinstance(model, Generator):
        return model.cfg.seq_len if hasattr(model.cfg, "seq_len") else sum(s * s for s in model.scales)
    codes = code_rows(model.encode(example_batch(model, tokenizer, 1)[0]))
    return codes[0, 0].numel() if codes.is_floating_point() else codes[0].numel()


def parameters(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def recipe_cost(name: str, batch: int = 2) -> dict:
    """One recipe's counts: parameters, codes per image, FLOPs and activation bytes per image (each phase: before the
    PatchGAN and with it), and the bytes that do not grow with the batch. The step is counted at `batch` and at twice
    that: what grows between the two is per image; the rest (the bf16 copies autocast makes of the weights, saved for
    the backward) is paid once per step."""
    model, cfg, tokenizer = build_recipe_model(name, torch.device("cpu"))
    model.train()
    objective = make_objective(cfg, model, torch.device("cpu"), wrap=lambda m: m)
    amp = torch.autocast("cpu", dtype=torch.bfloat16)  # the recipes' bf16 autocast: matmuls and convolutions in
    # bf16, norms, softmax and losses in fp32, as on CUDA
    gan = cfg.disc_weight > 0
    phases = {"": 0, "_gan": cfg.disc_start} if gan else {"": 0}
    row = {"recipe": name, "kind": cfg.model, "batch": cfg.batch_size, "steps": cfg.max_steps,
           "disc_start": cfg.disc_start if gan else ""}
    step_bytes = 0
    for suffix, step in phases.items():
        (f1, a1), (f2, a2) = (count_step(objective, model, *example_batch(model, tokenizer, b), step, amp)
                              for b in (batch, 2 * batch))
        per_image = (a2 - a1) / batch
        step_bytes = max(step_bytes, a1 - batch * per_image)
        row[f"gflops_per_image{suffix}"] = round((f2 - f1) / batch / 1e9, 3)
        row[f"activation_mib_per_image{suffix}"] = round(per_image / 2**20, 2)
    row.setdefault("gflops_per_image_gan", "")
    row.setdefault("activation_mib_per_image_gan", "")
    terms = getattr(objective, "terms", None)
    disc = parameters(getattr(terms, "discriminator", None))
    frozen = parameters(tokenizer) + parameters(getattr(terms, "perceptual", None))
    trained = parameters(model)
    codes = tokens_per_image(model, tokenizer)
    fixed = fixed_bytes(trained, frozen, disc, cfg.ema_weights > 0) + max(0, step_bytes)
    return {**row, "params_M": round(trained / 1e6, 1), "frozen_params_M": round(frozen / 1e6, 1),
            "disc_params_M": round(disc / 1e6, 2), "tokens_per_image": codes,
            "step_mib": round(max(0, step_bytes) / 2**20, 1), "fixed_gib": round(fixed / GIB, 2)}


def fixed_bytes(trained: int, frozen: int, disc: int, ema: bool) -> int:
    """Weights, gradients and AdamW's moments in fp32 (16 bytes per trained parameter, 20 with a weight average),
    frozen weights (4), the discriminator with its own AdamW (16). (recipe_cost adds what a step saves once.)"""
    return (20 if ema else 16) * trained + 4 * frozen + 16 * disc


# ------------------------------------------------------------------------------------------------ the plan

def step_flops(row: dict) -> tuple:
    """-> (FLOPs of one step before the PatchGAN, with it) at the recipe's batch."""
    plain = row["gflops_per_image"] * 1e9 * row["batch"]
    gan = (row["gflops_per_image_gan"] or row["gflops_per_image"]) * 1e9 * row["batch"]
    return plain, gan


def recipe_flops(row: dict) -> float:
    """The whole recipe: steps before the PatchGAN at one cost, after it at the other."""
    plain, gan = step_flops(row)
    gan_steps = max(0, row["steps"] - row["disc_start"]) if row["disc_start"] != "" else 0
    return (row["steps"] - gan_steps) * plain + gan_steps * gan


def activation_gib(row: dict, micro_batch: int) -> float:
    per_image = max(row["activation_mib_per_image"], row["activation_mib_per_image_gan"] or 0)
    return micro_batch * per_image / 1024


def measured(calibration_csv: Path) -> dict:
    """The H200's rows of gpu_calibration.csv at each recipe's batch of today: {recipe: (images/s, peak GiB)} (a
    recipe whose batch changed since has no row that speaks for it)."""
    out = {}
    if calibration_csv.exists():
        for r in csv.DictReader(open(calibration_csv)):
            if r["what"] == "train" and r["images_per_s"] and r["recipe"] in recipes.RECIPES and \
                    int(r["batch"]) == recipes.get(r["recipe"]).batch_size:
                out[r["recipe"]] = (float(r["images_per_s"]), float(r["peak_gib"]))
    return out


def utilisation(row: dict, images_per_s: float) -> float:
    """The fraction of the H200's bf16 peak the recipe reached: images/s x FLOPs per image (before the PatchGAN, the
    phase gpu_calibration.py's images/s measures)."""
    return images_per_s * row["gflops_per_image"] * 1e9 / (CALIBRATION.bf16_tflops * 1e12)


def family(row: dict) -> str:
    return "tokenizer" if row["disc_start"] != "" or row["kind"].endswith("vae") else "generator"


def overhead_factors(rows: list, seen: dict) -> dict:
    """How much more than batch x saved activations the H200's measured peak held beyond the fixed bytes (the
    backward's gradients of activations in flight, the allocator's cache), the median over the measured recipes of
    each family: {"tokenizer": ..., "generator": ...} (convolutions keep more in flight than transformers)."""
    ratios = {"tokenizer": [], "generator": []}
    for r in rows:
        if r["recipe"] in seen:
            ratios[family(r)].append((seen[r["recipe"]][1] - r["fixed_gib"]) / activation_gib(r, r["batch"]))
    every = [x for v in ratios.values() for x in v]
    return {k: statistics.median(v or every or [1.5]) for k, v in ratios.items()}


def accumulation(row: dict, gpu: GPU, overhead: float):
    """The smallest gradient accumulation (a divisor of the batch) that fits the card, or None if even one image
    per slice does not."""
    budget = HEADROOM * gpu.memory_gib - row["fixed_gib"]
    n = 1
    while n <= row["batch"]:
        if row["batch"] % n == 0 and overhead * activation_gib(row, row["batch"] // n) <= budget:
            return n
        n += 1
    return None


def plan(rows: list, seen: dict) -> list:
    """Add to each row the memory at its batch, the utilisation, and for each GPU class the hours and accumulation."""
    factors = overhead_factors(rows, seen)
    measured_util = {r["recipe"]: utilisation(r, seen[r["recipe"]][0]) for r in rows if r["recipe"] in seen}
    default_util = statistics.median(measured_util.values()) if measured_util else 0.1
    for r in rows:
        overhead = factors[family(r)]
        r["overhead"] = round(overhead, 2)
        r["memory_gib"] = round(r["fixed_gib"] + overhead * activation_gib(r, r["batch"]), 1)
        r["measured_peak_gib"] = seen[r["recipe"]][1] if r["recipe"] in seen else ""
        # whether a slice fits a card: the larger of the family's factor and the recipe's own measured one (the
        # computed memory misses some measured peaks by a quarter; a plan must not promise a fit that fails)
        own = (seen[r["recipe"]][1] - r["fixed_gib"]) / activation_gib(r, r["batch"]) if r["recipe"] in seen else 0
        r["fit_overhead"] = round(max(overhead, own), 2)
        u = measured_util.get(r["recipe"])
        r["utilisation"], r["utilisation_from"] = round(u or default_util, 4), "measured" if u else "median"
        total = recipe_flops(r)
        r["pflops_recipe"] = round(total / 1e15, 1)
        for gpu in GPUS:
            key = gpu.name.split()[0].lower()
            n = accumulation(r, gpu, r["fit_overhead"])
            r[f"{key}_accum"] = n if n else "does not fit"
            r[f"{key}_hours"] = round(total / (gpu.bf16_tflops * 1e12 * r["utilisation"]) / 3600, 1)
    return rows


# ------------------------------------------------------------------------------------------ the README's table

def recorded(csv_path: Path) -> dict:
    """The latest recorded row of each recipe in gpu_plan.csv, numbers as numbers: {recipe: row}."""
    def number(v: str):
        try:
            return int(v) if v.lstrip("-").isdigit() else float(v)
        except ValueError:
            return v
    return {name: {k: number(v) for k, v in r.items()} for name, r in latest_rows(csv_path).items()}


def gpu_key(gpu: GPU) -> str:
    return gpu.name.split()[0].lower()


def gpu_cell(row: dict, gpu: GPU) -> str:
    n = row[f"{gpu_key(gpu)}_accum"]
    if n == "does not fit":
        return "does not fit"
    return f"{row[f'{gpu_key(gpu)}_hours']} h" + (f", `grad_accum={n}`" if n > 1 else "")


def readme_table(rows: list) -> list:
    """The README's plan table, a line per recipe, from recorded rows (what the README test compares with)."""
    lines = ["| recipe | batch | parameters (+ frozen) | codes per image | activations at the batch (bf16) | TFLOP per "
             "step (with the PatchGAN) | memory at the batch: computed (measured on the H200) | utilisation | "
             + " | ".join(g.name for g in GPUS) + " |",
             "|---" * (8 + len(GPUS)) + "|"]
    for r in rows:
        plain, gan = (f / 1e12 for f in step_flops(r))
        peak = f" ({r['measured_peak_gib']:.1f})" if r["measured_peak_gib"] != "" else ""
        use = f"{r['utilisation']:.1%}" + (" (median)" if r["utilisation_from"] == "median" else "")
        lines.append(f"| `{r['recipe']}` | {r['batch']} | {r['params_M']} M (+ {r['frozen_params_M']} M) | "
                     f"{r['tokens_per_image']} | {activation_gib(r, r['batch']):.1f} GiB | {plain:.1f}"
                     + (f" ({gan:.1f})" if r["disc_start"] != "" else "") + f" | {r['memory_gib']} GiB{peak} | "
                     f"{use} | " + " | ".join(gpu_cell(r, g) for g in GPUS) + " |")
    return lines


def worked_example(r: dict, gpu: GPU = GPUS[0]) -> str:
    """One recipe's row of the plan, worked by hand from its counts (the README quotes it)."""
    per_image = max(r["activation_mib_per_image"], r["activation_mib_per_image_gan"] or 0)
    plain, _ = step_flops(r)
    ema = 20 if recipes.get(r["recipe"]).ema_weights > 0 else 16
    n = r[f"{gpu_key(gpu)}_accum"]
    budget = HEADROOM * gpu.memory_gib - r["fixed_gib"]
    k = r["fit_overhead"]
    fit = (f"the whole batch's {r['batch']} x {per_image:.1f} MiB x {k} = "
           f"{k * activation_gib(r, r['batch']):.1f} GiB of activations exceeds {HEADROOM:.0%} of "
           f"{gpu.memory_gib} GiB less the fixed {r['fixed_gib']} GiB ({budget:.1f} GiB), so {n} slices of "
           f"{r['batch'] // n} (`--set grad_accum={n}`): {k * activation_gib(r, r['batch'] // n):.1f} GiB"
           if isinstance(n, int) and n > 1 else f"the batch fits in {budget:.1f} GiB")
    return (f"`{r['recipe']}`: fixed = {ema} B x {r['params_M']} M trained + 4 B x {r['frozen_params_M']} M frozen "
            f"+ {r['step_mib']:.0f} MiB (the step's bf16 weight copies) = {r['fixed_gib']} GiB; memory = "
            f"{r['fixed_gib']} GiB + {r['batch']} x {per_image:.1f} MiB x {r['overhead']} = {r['memory_gib']} GiB "
            f"(the H200 measured {r['measured_peak_gib']}); a step = {r['batch']} x {r['gflops_per_image']:.1f} "
            f"GFLOP = {plain / 1e12:.1f} TFLOP, so on an {gpu.name}: {r['steps']:,} steps x {plain / 1e12:.1f} "
            f"TFLOP / ({gpu.bf16_tflops:g} TFLOP/s x {r['utilisation']:.1%}) = {r[f'{gpu_key(gpu)}_hours']} h; "
            f"on its {gpu.memory_gib} GiB, {fit}.")


def readme_section(rows: dict) -> str:
    """The README's plan, prose, table and a row worked by hand, from the recorded rows ({recipe: row}); the README
    test compares the two, so a recipe changed without running this script again is caught."""
    tok, gen = (next(r["overhead"] for r in rows.values() if family(r) == f) for f in ("tokenizer", "generator"))
    unmeasured = [f"`{r['recipe']}`" for r in rows.values() if r["utilisation_from"] == "median"]
    worst = min((r for r in rows.values() if r["measured_peak_gib"] != ""),
                key=lambda r: r["memory_gib"] / r["measured_peak_gib"])
    return f"""#### Planning a lab on another card, by arithmetic

`python benchmarks/gpu_plan.py` counts one training step of each recipe's real model on the CPU in about a minute
(`benchmarks/results/gpu_plan.csv`): FLOPs per image (forward and backward, the PatchGAN's own step included once it
is on), the bytes autograd saves per image under bf16 autocast, and the memory that does not grow with the batch
(16 bytes per trained parameter for fp32 weights, gradients and AdamW's two moments, 4 per frozen one, the
discriminator's). A card's memory at a batch is `fixed + batch × activations × overhead`, the overhead (what the
backward and the allocator add) fitted on the H200 peaks above: the median of the tokenizers' ({tok}) and of the
generators' ({gen}). Hours are `steps × batch × FLOPs per image ÷ (the card's dense bf16 peak × utilisation)`, the
utilisation each recipe reached on the H200 (images/s × FLOPs ÷ 989 TFLOP/s; small models leave it waiting on kernel
launches, so a slower card's hours are an upper bound). A recipe whose batch does not fit {HEADROOM:.0%} of a card
gets the smallest `--set grad_accum=N` that does: the same batch and the same updates, in N slices
({", ".join(unmeasured) or "every recipe"} {"was" if len(unmeasured) == 1 else "were"} not measured: the median
utilisation).

{chr(10).join(readme_table(list(rows.values())))}

One row worked by hand, {worked_example(rows["cifar10-var"])}
Cards: {", ".join(f"{g.name} ({g.bf16_tflops:g} TFLOP/s bf16)" for g in GPUS)}, dense, as their makers state
them. The computed memory misses some measured peaks (`{worst['recipe']}`: {worst['memory_gib']} GiB computed,
{worst['measured_peak_gib']:.1f} measured), so whether a card fits takes the larger of the family's overhead and the
recipe's own.
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipes", nargs="*", default=GPU_RECIPES, help="GPU recipes (default: all of them)")
    p.add_argument("--batch", type=int, default=2, help="images per counted step (the counts are per image)")
    p.add_argument("--calibration", type=Path, default=RESULTS / "gpu_calibration.csv",
                   help="the measured rows the utilisation and memory overhead are fitted on")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the results CSV (default benchmarks/results)")
    args = p.parse_args()
    unknown = [r for r in args.recipes if r not in GPU_RECIPES]
    if unknown:
        raise SystemExit(f"not a GPU recipe: {', '.join(unknown)}; choose from {', '.join(GPU_RECIPES)}")
    torch.manual_seed(0)
    import minivar.train  # LPIPS with random weights: its VGG16 download needs the internet; counts need no values
    minivar.train.TokenizerLoss = functools.partial(TokenizerLoss, lpips_pretrained=False)
    rows = []
    for name in args.recipes:
        print(f"{name} ...", flush=True)
        rows.append(recipe_cost(name, args.batch))
    rows = plan(rows, measured(args.calibration))
    record(args.out / "gpu_plan.csv", rows, torch.device("cpu"))
    print(f"\n{'recipe':<18} {'batch':>5} {'params':>7} {'tokens':>6} {'GFLOP/img':>9} {'act MiB/img':>11} "
          f"{'fixed':>6} {'memory':>7} {'H200 peak':>9} {'util':>5}  " + "  ".join(f"{g.name:>17}" for g in GPUS))
    for r in rows:
        flops = r["gflops_per_image_gan"] or r["gflops_per_image"]
        act = r["activation_mib_per_image_gan"] or r["activation_mib_per_image"]
        cells = [f"{r[g.name.split()[0].lower() + '_hours']:>6} h x{r[g.name.split()[0].lower() + '_accum']}"
                 for g in GPUS]
        print(f"{r['recipe']:<18} {r['batch']:>5} {r['params_M']:>6}M {r['tokens_per_image']:>5} {flops:>9.1f} "
              f"{act:>11.1f} {r['fixed_gib']:>5.1f}G {r['memory_gib']:>6.1f}G {r['measured_peak_gib']:>9} "
              f"{r['utilisation']:>5.3f}  " + "  ".join(f"{c:>17}" for c in cells))
    factors = ", ".join(f"{k}s {v:.2f}" for k, v in overhead_factors(rows, measured(args.calibration)).items())
    print(f"memory = fixed + batch x activations x overhead ({factors}, fitted on the H200's peaks); hours = steps x "
          f"batch x FLOPs / (peak bf16 x utilisation); xN: gradient accumulation to fit {HEADROOM:.0%} of the card")


if __name__ == "__main__":
    main()
