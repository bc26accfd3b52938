"""benchmarks/gpu_calibration.py, prepared for the day a GPU is at hand: its data files load as the real ones do, its
arithmetic is right, and the whole script runs the real training loop on the CPU (tiny models stand in for the GPU
recipes; no wall time is asserted)."""

import csv
import dataclasses
import itertools
import sys
from pathlib import Path

import pytest
import torch

from minivar import recipes
from minivar.data import dataset_labels, load_dataset, write_official_format
from tests.helpers import tiny_vqvae_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_calibration  # noqa: E402  (a script beside the package, imported from its folder)
import gpu_plan  # noqa: E402
import token_cache as cache_benchmark  # noqa: E402  (benchmarks/token_cache.py, not minivar.token_cache)
from common import latest_rows  # noqa: E402


def test_synthetic_data_is_read_by_the_real_loaders(tmp_path):
    write_official_format("cifar10", tmp_path, n_train=23, n_test=7)
    write_official_format("imagenet64", tmp_path, n_train=11, n_test=5, seed=1)
    for name, n_train, n_test, size, classes in (("cifar10", 23, 7, 32, 10), ("imagenet64", 11, 5, 64, 1000)):
        train, test = (load_dataset(name, split, image_size=size, root=tmp_path) for split in ("train", "test"))
        assert (len(train), len(test)) == (n_train, n_test)
        x, _ = train[0]
        assert x.shape == (3, size, size) and -1 <= x.min() < x.max() <= 1
        labels = dataset_labels(train)
        assert 0 <= labels.min() and labels.max() < classes  # imagenet64's 1-based labels come out 0-based


def test_rate_is_images_over_the_loops_own_clock():
    records = [{"step": s, "elapsed": 0.5 * s + (3.0 if s > 0 else 0)} for s in range(0, 41, 5)]  # 3 s of warm-up
    assert gpu_calibration.rate(records, 5, 40, batch=8) == pytest.approx(35 * 8 / (0.5 * 35))
    assert gpu_calibration.rate(records, 40, 40, batch=8) is None  # one record is no interval


def test_recipe_minutes_count_the_patchgan_phase_at_its_own_rate():
    full = recipes.get("cifar10-vqvae")
    plain_steps = full.disc_start
    expected = (plain_steps * full.batch_size / 1000 + (full.max_steps - plain_steps) * full.batch_size / 500) / 60
    assert gpu_calibration.recipe_minutes(full, 1000, 500) == pytest.approx(expected)
    generator = recipes.get("cifar10-raster")
    assert gpu_calibration.recipe_minutes(generator, 2000, None) == pytest.approx(
        generator.max_steps * generator.batch_size / 2000 / 60)


@pytest.fixture
def tiny_gpu_recipes(monkeypatch):
    """cifar10-vqvae (LPIPS + PatchGAN, as the real recipe) and cifar10-raster at test sizes."""
    vqvae = recipes.Recipe("cifar10-vqvae at test size", "vqvae", dict(
        dataset="cifar10", batch_size=4, perceptual_weight=1.0, disc_weight=0.5, disc_start=1000, max_steps=3000),
        dataclasses.asdict(tiny_vqvae_config(codebook_size=16)))
    raster = recipes.Recipe("cifar10-raster at test size", "raster", dict(
        tokenizer="runs/cifar10-vqvae", dataset="cifar10", batch_size=4, max_steps=5000),
        dict(num_classes=10, dim=32, n_layer=1, n_head=4, multiple_of=16))
    monkeypatch.setitem(recipes.RECIPES, "cifar10-vqvae", vqvae)
    monkeypatch.setitem(recipes.RECIPES, "cifar10-raster", raster)


def test_the_script_runs_the_real_loop_and_records_every_row(tmp_path, monkeypatch, tiny_gpu_recipes):
    # a generator alone pulls in its tokenizer, which is calibrated first
    monkeypatch.setattr(sys, "argv", ["gpu_calibration.py", "--device", "cpu", "--steps", "4", "--log-every", "1",
                                      "--workers", "0", "--images", "40", "--sample-batch", "3", "--out",
                                      str(tmp_path), "cifar10-raster"])
    torch.manual_seed(0)
    gpu_calibration.main()
    rows = list(csv.DictReader(open(tmp_path / "gpu_calibration.csv")))
    assert [(r["what"], r["recipe"]) for r in rows] == [("train", "cifar10-vqvae"), ("train", "cifar10-raster"),
                                                        ("sample", "cifar10-raster")]
    tokenizer, generator, sampling = rows
    assert float(tokenizer["images_per_s"]) > 0 and float(tokenizer["gan_images_per_s"]) > 0  # both phases timed
    assert float(tokenizer["encode_images_per_s"]) > 0
    assert float(generator["recipe_minutes"]) > 0 and generator["fits"] == "True"
    assert float(sampling["codes_images_per_s"]) > 0 and sampling["machine"] and sampling["torch"]


def test_the_script_refuses_a_recipe_it_does_not_calibrate(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["gpu_calibration.py", "--device", "cpu", "emoji-var"])
    with pytest.raises(SystemExit, match="not a GPU recipe: emoji-var"):
        gpu_calibration.main()


def readme_table(path, header: str) -> list:
    """The cells of each row of the table whose header line starts with `header`."""
    lines = Path(path).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header)) + 2
    return [line.split("|")[1:-1] for line in itertools.takewhile(lambda line: line.startswith("|"), lines[start:])]


def test_the_readme_gpu_table_quotes_the_recorded_calibration():
    """Every measured figure of the README's GPU table is the recorded one (the longest run of each recipe), and the
    whole-recipe time is the recipe's steps at that rate: a recipe changed later makes this fail."""
    root = Path(__file__).resolve().parents[1]
    recorded = {}
    for r in csv.DictReader(open(root / "benchmarks" / "results" / "gpu_calibration.csv")):
        if r["what"] == "train" and int(r["steps"]) >= int(recorded.get(r["recipe"], {}).get("steps", 0)):
            recorded[r["recipe"]] = r
    rows = readme_table(root / "README.md", "| recipe | what it trains |")
    assert {cells[0].strip(" `") for cells in rows} == set(gpu_calibration.GPU_RECIPES)
    checked = 0
    for recipe, _, batch, params, rate, peak, whole in (c for c in (map(str.strip, cells) for cells in rows)):
        name = recipe.strip("`")
        if rate.startswith("not measured"):
            assert name not in recorded
            continue
        r, full = recorded[name], recipes.get(name)
        assert int(batch) == int(r["batch"]) == full.batch_size, name
        assert params == f"{float(r['params_M']):.1f} M"
        plain = float(r["images_per_s"])
        gan = float(r["gan_images_per_s"]) if r["gan_images_per_s"] else None
        assert rate == f"{plain:,.0f}" + (f" ({gan:,.0f})" if gan else ""), name
        assert peak == f"{float(r['peak_gib']):.1f} GiB", name
        minutes = gpu_calibration.recipe_minutes(full, plain, gan)
        hours = f"{minutes / 60:.{1 if minutes < 600 else 0}f} h"
        assert whole == (f"{minutes:.0f} min" if minutes < 120 else hours), name
        checked += 1
    assert checked >= 13


def test_the_readme_plan_is_the_recorded_one_for_todays_recipes():
    """The README's plan (prose, table, the row worked by hand) and its token-cache figures are what the recorded
    CSVs say, and every GPU recipe's row was counted at its batch and steps of today."""
    root = Path(__file__).resolve().parents[1]
    rows = gpu_plan.recorded(root / "benchmarks" / "results" / "gpu_plan.csv")
    assert set(rows) == set(gpu_plan.GPU_RECIPES)
    for name, r in rows.items():
        assert (r["batch"], r["steps"]) == (recipes.get(name).batch_size, recipes.get(name).max_steps), name
    readme = (root / "README.md").read_text()
    assert gpu_plan.readme_section(rows) in readme
    assert cache_benchmark.readme_paragraph(latest_rows(root / "benchmarks" / "results" / "token_cache.csv")) \
        in readme


def test_the_plan_counts_a_step_and_divides_a_batch_until_it_fits():
    row = {"batch": 256, "steps": 1000, "disc_start": "", "gflops_per_image": 10.0, "gflops_per_image_gan": "",
           "activation_mib_per_image": 40.0, "activation_mib_per_image_gan": "", "fixed_gib": 2.0}
    assert gpu_plan.recipe_flops(row) == 1000 * 256 * 10e9
    gan = {**row, "disc_start": 400, "gflops_per_image_gan": 12.0, "activation_mib_per_image_gan": 80.0}
    assert gpu_plan.recipe_flops(gan) == 400 * 256 * 10e9 + 600 * 256 * 12e9  # each phase at its own cost
    card = gpu_plan.GPU("a card", 20.0, 100.0)  # 90% of 20 GiB less 2 fixed: 16 GiB for activations
    assert gpu_plan.accumulation(row, card, 1.5) == 1  # 256 x 40 MiB x 1.5 = 15 GiB
    assert gpu_plan.accumulation(gan, card, 1.5) == 2  # the PatchGAN phase's 80 MiB: 30 GiB, then 15 in two slices
    assert gpu_plan.accumulation({**row, "batch": 243}, card, 3.0) == 3  # the smallest divisor that fits: 243 / 3
    assert gpu_plan.accumulation({**row, "fixed_gib": 18.5}, card, 1.5) is None  # not even one image
    assert gpu_plan.fixed_bytes(10, 20, 30, ema=False) == 16 * 10 + 4 * 20 + 16 * 30
    assert gpu_plan.fixed_bytes(10, 20, 30, ema=True) == 20 * 10 + 4 * 20 + 16 * 30


def test_the_plan_counts_a_transformer_step_as_six_flops_per_weight_and_token_plus_attention():
    """Forward 2 and backward 4 FLOPs per weight and token, and attention's 12 x layers x T^2 x width: what any
    LLM-from-scratch book derives; the counted FLOPs of emoji-raster's step must agree (the loss and norms add a
    little; embeddings are lookups)."""
    cost = gpu_plan.recipe_cost("emoji-raster")
    model, cfg, _ = gpu_plan.build_recipe_model("emoji-raster", torch.device("cpu"))
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    t, c = cost["tokens_per_image"], cfg.model_config
    assert t == 64
    expected = 6 * t * weights + 12 * c.n_layer * t * t * c.dim
    assert 0.9 < cost["gflops_per_image"] * 1e9 / expected < 1.1
    assert cost["activation_mib_per_image"] > 0 and cost["fixed_gib"] * 2**30 >= gpu_plan.fixed_bytes(
        sum(p.numel() for p in model.parameters()), 0, 0, ema=False)


def test_exposure_bias_teacher_forcing_is_the_models_own_loss_and_its_first_tokens_have_no_context_to_lose():
    import exposure_bias  # a script beside the package, like gpu_calibration

    from minivar import pretrained
    images = torch.stack([load_dataset("emoji", "test", image_size=32)[i][0] for i in range(6)])
    labels = torch.arange(6) % 9
    for name, fn in (("emoji-var", exposure_bias.var_losses), ("emoji-raster", exposure_bias.raster_losses)):
        model = pretrained.load(name).eval()
        losses = fn(model, images, labels, torch.Generator().manual_seed(0))
        codes = model.tokenizer.encode(images)
        tokens = torch.cat([m.flatten(1) for m in codes], 1) if isinstance(codes, list) else codes.flatten(1)
        with torch.no_grad():
            assert torch.allclose(losses["teacher"].mean(), model.loss((tokens, labels))[0], atol=1e-4)
        first = 1  # VAR's 1x1 scale reads only the class; so does the raster GPT's first token
        assert torch.allclose(losses["own"][:, :first], losses["teacher"][:, :first], atol=1e-5)
        assert losses["own"][:, first:].mean() > losses["teacher"][:, first:].mean()  # its own draws cost something
        rows = exposure_bias.summarise(name, name, losses, model)
        assert rows[-1]["tokens"] == "all tokens" and len(rows) == (7 if name == "emoji-var" else 9)  # groups + all
        if name == "emoji-var":  # the 1x1 scale, a whole group, reads no tokens at all
            assert rows[0]["tokens"] == "1x1" and rows[0]["gap"] == 0.0


@pytest.mark.slow
def test_grading_time_times_a_class_of_ten_and_records_what_it_graded(tmp_path):
    import grading_time  # beside gpu_calibration (benchmarks/ is on the path)
    grading_time.main(["--exercises", "ex07", "--jobs", "2", "--timeout", "3", "--out", str(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / "grading_time.csv")))
    assert len(rows) == 1 and rows[0]["jobs"] == "2" and float(rows[0]["seconds"]) > 0
    # honest 4 of 4, endless 3 of 4 (its loop costs one part), everyone else 0: the timing is of a right grading
    assert rows[0]["result"].startswith("graded 10 submissions: 7 of 40 parts passed"), rows[0]["result"]
    assert rows[0]["late_write"] == "False"


def test_the_compile_break_evens_sample_uses_are_the_recorded_ones():
    """minivar.sampling.COMPILE_PAYS_AFTER (what `sample` decides by when --compile is not given) agrees with the
    latest CPU rows of benchmarks/results/sampling_speed.csv: within a factor 1.5 of each recorded break-even, None
    where compiling was never faster; and for the course's 1,000-sample measurements at batch 64, compiling does
    not pay for any generator (so sample --fd and the notebooks' sweeps stay eager on a CPU)."""
    from minivar.sampling import COMPILE_PAYS_AFTER, compile_pays
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "sampling_speed.csv"
    rows = {}
    for r in csv.DictReader(open(path, newline="")):
        if r["device"] == "cpu" and r.get("break_even_images"):
            rows[r["model"], int(r["batch"])] = r["break_even_images"]  # later rows supersede earlier ones
    for kind, table in COMPILE_PAYS_AFTER.items():
        for batch, even in table.items():
            recorded = rows[f"emoji-{kind}", batch]
            if even is None:
                assert recorded == "never", (kind, batch, recorded)
            else:
                assert recorded != "never" and 1 / 1.5 <= even / int(recorded) <= 1.5, (kind, batch, recorded)
        assert not compile_pays(kind, 1000, 64, "cpu")


def test_compile_pays_reads_the_nearest_recorded_batch_and_never_guesses_for_a_gpu(monkeypatch):
    from minivar import sampling
    monkeypatch.setattr(sampling, "COMPILE_PAYS_AFTER", {"raster": {1: 300, 64: 3000, 256: None}})
    assert sampling.compile_pays("raster", 500, 1, "cpu")           # batch 1: pays after 300
    assert not sampling.compile_pays("raster", 500, 64, "cpu")      # batch 64: after 3,000
    assert sampling.compile_pays("raster", 5000, 100, "cpu")        # 100 is nearest 64
    assert not sampling.compile_pays("raster", 10**6, 200, "cpu")   # nearest 256: never paid
    assert not sampling.compile_pays("raster", 10**6, 64, "cuda")   # not measured on a GPU
    assert not sampling.compile_pays("t2i", 10**6, 64, "cpu")       # not measured at all
