"""The model contract (minivar/models.py): a model defined outside the package trains, samples and resumes through
minivar's loop and CLI; every built-in model keeps the contract; the package has no import circles."""

import ast
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import minivar
from minivar.__main__ import main
from minivar.metrics import evaluate_model
from minivar.models import MODELS, Generator, Tokenizer, build, register
from minivar.sampling import SamplingOptions, option
from minivar.train import TrainConfig, train
from tests.helpers import QUICK, crash_at_call, tiny_train_config

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------- a toy generator, written against the contract only

@dataclass
class UnigramConfig:
    codebook_size: int = 0  # read from the tokenizer
    grid: int = 0  # read from the tokenizer
    num_classes: int = 9
    guidance: float = 1.0


@dataclass(frozen=True)
class UnigramSampling(SamplingOptions):
    temperature: float = option(1.0, "softmax temperature of the table")
    greedy: bool = option(False, "the most likely token at every position, a knob no minivar generator has")

    def check(self):
        super().check()
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 for the unigram table, got {self.temperature}")


@register("test-unigram", UnigramConfig)
class Unigram(Generator):
    """Every token on its own: a learned table of logits per class and position."""
    options_class = UnigramSampling

    def __init__(self, cfg):
        super().__init__(cfg)
        self.logits = torch.nn.Parameter(torch.zeros(cfg.num_classes, cfg.grid * cfg.grid, cfg.codebook_size))

    def loss(self, batch, progress=0.0):
        tokens, labels = batch  # (one-hot @ table, not table[labels]: its backward sums in a fixed order)
        logits = torch.einsum("bc,cnv->bnv", F.one_hot(labels, self.cfg.num_classes).float(), self.logits)
        loss = F.cross_entropy(logits.flatten(0, 1), tokens.flatten())
        return loss, {"progress": torch.tensor(progress)}

    @torch.no_grad()
    def generate(self, labels, options=None, *, generator=None, trace=None, **overrides):
        with self.sampling(labels, options, **overrides) as run:  # checked options and labels, eval mode
            o, shape = run.options, (run.batch, self.cfg.grid, self.cfg.grid)
            if o.greedy:
                return self.logits[run.labels].argmax(-1).view(shape)
            probs = (self.logits[run.labels] / o.temperature).softmax(-1).flatten(0, 1)
            return torch.multinomial(probs, 1, generator=generator).view(shape)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    cfg = tiny_train_config(tmp_path_factory.mktemp("tok"), max_steps=4, eval_every=100, ckpt_every=100)
    train(cfg, progress=False)
    return cfg.run_dir


def unigram_config(out_dir, tokenizer_dir, **kw):
    base = dict(name="unigram", model="test-unigram", tokenizer=str(tokenizer_dir), out_dir=str(out_dir),
                batch_size=16, lr=0.05, warmup_steps=2, max_steps=20, eval_every=10, ckpt_every=10, log_every=1,
                eval_batches=1, model_config=UnigramConfig(), **QUICK)
    return TrainConfig(**{**base, **kw})


def test_a_generator_written_outside_minivar_trains_samples_and_resumes(tmp_path, tokenizer_dir, monkeypatch,
                                                                         capsys):
    straight = train(unigram_config(tmp_path / "a", tokenizer_dir), progress=False)
    records = [json.loads(line) for line in (tmp_path / "a" / "unigram" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < records[0]["loss"] - 0.3  # from ln 32 = 3.47 down
    progress = [r["progress"] for r in records]  # the loop tells loss() how far the run is
    assert progress[0] == 0.0 and progress == sorted(progress) and progress[-1] == pytest.approx(19 / 20)
    assert straight["model"].cfg.codebook_size == 32 and straight["model"].cfg.grid == 16  # read from the tokenizer
    assert (tmp_path / "a" / "unigram" / "preview.png").exists() and "test_loss" in straight

    cfg = unigram_config(tmp_path / "b", tokenizer_dir)
    crash_at_call(monkeypatch, 14, RuntimeError("killed"))
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, progress=False)
    monkeypatch.undo()
    resumed = train(cfg, resume=True, progress=False)
    assert resumed["step"] == 20
    assert torch.equal(resumed["model"].logits, straight["model"].logits)  # bit for bit

    model = minivar.load(tmp_path / "a" / "unigram")
    assert isinstance(model, Unigram) and model.tokenizer.cfg.codebook_size == 32
    out = tmp_path / "grid.png"
    assert main(["sample", str(tmp_path / "a" / "unigram"), "--n", "9", "--temperature", "0.5",
                 "--out", str(out)]) == 0
    assert out.exists() and "9 of 9 samples" in capsys.readouterr().out
    assert main(["sample", str(tmp_path / "a" / "unigram"), "--top-k", "5", "--out", str(out)]) == 2
    assert "does not take" in capsys.readouterr().err  # an option this generator has not got: one clear line
    assert main(["sample", str(tmp_path / "a" / "unigram"), "--temperature", "-1", "--out", str(out)]) == 2
    assert "temperature must be > 0 for the unigram table" in capsys.readouterr().err  # its own check, before sampling


def test_a_generator_written_outside_minivar_gets_its_sampling_flags(tmp_path, tokenizer_dir, capsys):
    """The CLI builds `sample`'s flags from the options dataclasses: --greedy is declared in this file only."""
    run = train(unigram_config(tmp_path, tokenizer_dir), progress=False)["model"]
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # (argparse wraps the help text)
    assert "--greedy" in shown and "a knob no minivar generator has [test-unigram: False]" in shown
    grids = {}
    for flags in (["--greedy"], ["--no-greedy"], ["--greedy", "--seed", "5"]):
        out = tmp_path / f"{'_'.join(flags)}.png"
        assert main(["sample", str(tmp_path / "unigram"), "--n", "9", *flags, "--out", str(out)]) == 0
        grids[tuple(flags)] = out.read_bytes()
    assert grids[("--greedy",)] == grids[("--greedy", "--seed", "5")]  # greedy: no randomness left
    assert grids[("--greedy",)] != grids[("--no-greedy",)]
    # and the file name carries it when --out is not given
    assert main(["sample", str(tmp_path / "unigram"), "--n", "3", "--greedy"]) == 0
    assert (tmp_path / "unigram" / "samples_guidance1_greedy_seed0_n3.png").exists(), capsys.readouterr()
    assert run.sampling_options(greedy=True).greedy and not run.sampling_options().greedy


# --------------------------------------------------------------------------- every built-in model keeps it

def tiny_models():
    from minivar.flowar import FlowARConfig
    from minivar.kl_autoencoder import KLAutoencoderConfig
    from minivar.maskgit_vq import MaskGITVQConfig
    from minivar.msvq import MultiScaleVQVAEConfig
    from minivar.rar import RARConfig
    from minivar.raster_ar import RasterARConfig
    from minivar.var import VARConfig
    from tests.helpers import tiny_vqvae_config
    torch.manual_seed(0)
    vq = build("vqvae", tiny_vqvae_config(ch_mult=(1, 2, 2)))
    ms = build("msvqvae", MultiScaleVQVAEConfig(image_size=32, ch=8, ch_mult=(1, 2, 2), z_channels=8, code_dim=4,
                                                codebook_size=32, scales=(1, 2, 4, 8)))
    kl = build("klvae", KLAutoencoderConfig(image_size=32, ch=8, ch_mult=(1, 2, 2), latent_channels=4))
    raster = build("raster", RasterARConfig(num_classes=3, dim=32, n_layer=1, n_head=4, multiple_of=16), vq.eval())
    var = build("var", VARConfig(num_classes=3, depth=1, dim=32, n_head=4), ms.eval())
    flowar = build("flowar", FlowARConfig(num_classes=3, dim=32, n_head=2, encoder_depth=1, decoder_depth=1,
                                          head_width=64, head_depth=1, sample_steps=2), kl.eval())
    rar = build("rar", RARConfig(num_classes=3, dim=32, n_layer=1, n_head=2), vq.eval())
    maskgit = build("maskgitvq", MaskGITVQConfig(image_size=32, ch=32, ch_mult=(1, 2), num_res_blocks=1, code_dim=8,
                                                 codebook_size=32))
    return {"vqvae": vq, "msvqvae": ms, "klvae": kl, "raster": raster, "var": var, "flowar": flowar, "rar": rar,
            "maskgitvq": maskgit}


def test_every_built_in_model_keeps_the_contract():
    models = tiny_models()
    assert set(models) <= set(MODELS)
    images, labels = torch.rand(3, 3, 32, 32) * 2 - 1, torch.tensor([0, 1, 2])
    for kind, model in models.items():
        assert MODELS[kind] is type(model) and model.kind == kind
        model.train()
        if isinstance(model, Tokenizer):
            batch = (images, labels)
            codes = model.encode(images)
            assert model.decode(codes).shape == images.shape
            assert model.last_layer is model.decoder.conv_out.weight
        else:
            from minivar.token_cache import code_rows
            batch = (code_rows(model.tokenizer.encode(images)), labels)
            codes = model.generate(labels, guidance=2.0, generator=torch.Generator().manual_seed(0))
            assert model.tokenizer.decode(codes).shape == images.shape  # generate returns what decode takes
        loss, metrics = model.loss(batch, 0.5)
        loss.backward()  # a scalar with gradients
        assert loss.ndim == 0 and all(torch.is_tensor(v) and v.ndim == 0 and not v.requires_grad
                                      for v in metrics.values()), (kind, metrics)
        assert model.preview(batch).shape == (6, 3, 32, 32), kind  # two rows of three
        assert model.training  # evaluate and preview leave the mode alone
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*batch), batch_size=2)
        assert all(isinstance(v, float) for v in evaluate_model(model, loader).values())
        assert model.training


def test_every_generator_samples_through_one_contract_and_refuses_the_same_bad_input():
    """One opening for all four (Generator.sampling): the same refusals, the training mode restored even after one,
    and generate returning what the tokenizer decodes, with overrides equal to the options they replace."""
    models = tiny_models()
    for kind in ("raster", "var", "flowar", "rar"):
        model = models[kind].train()
        for bad, message in ((dict(labels=[3]), r"must lie in \[0, 3\)"), (dict(guidance=-1.0), "guidance must be"),
                             (dict(guidance_schedule="ramp"), "guidance_schedule must be one of"),
                             (dict(no_such_knob=1), f"a {kind} model does not take no_such_knob")):
            kw = {"labels": [0], **bad}
            with pytest.raises(ValueError, match=message):
                model.generate(kw.pop("labels"), **kw)
            assert model.training, f"{kind}: a refused call left the model in eval mode"
        options = model.sampling_options(guidance=1.5)
        a = model.generate([0, 2], options, generator=torch.Generator().manual_seed(0))
        b = model.generate([0, 2], guidance=1.5, generator=torch.Generator().manual_seed(0))
        for x, y in zip(*(v if isinstance(v, list) else [v] for v in (a, b))):
            assert torch.equal(x, y), kind
        assert model.tokenizer.decode(a).shape == (2, 3, 32, 32) and model.training


def test_generators_read_their_tokenizer_and_refuse_one_that_does_not_fit():
    models = tiny_models()
    assert (models["raster"].cfg.codebook_size, models["raster"].cfg.grid) == (32, 8)
    assert (models["var"].cfg.scales, models["var"].cfg.code_dim) == ((1, 2, 4, 8), 4)
    with pytest.raises(ValueError, match="reads scales from its tokenizer, but a vqvae tokenizer has none"):
        build("var", type(models["var"].cfg)(num_classes=3, depth=1, dim=32, n_head=4), models["vqvae"])
    with pytest.raises(ValueError, match="codebook_size = 64 but the raster model has 32: --set codebook_size=64 "):
        models["raster"].bind(build("vqvae", type(models["vqvae"].cfg)(**{**models["vqvae"].cfg.__dict__,
                                                                         "codebook_size": 64})))


def test_tokenizers_and_generators_call_each_shared_size_by_one_name(tmp_path):
    """code_format() is the tokenizer config's own fields, untranslated; a generator's fields read from it have the
    same names and values. A checkpoint or --set from an older minivar (vocab_size, embed_dim) finds the new name."""
    models = tiny_models()
    for kind, model in models.items():
        if isinstance(model, Tokenizer):
            assert model.code_format() == {f: getattr(model.cfg, f) for f in model.code_fields}, kind
        else:
            for f in model.from_tokenizer:
                assert getattr(model.cfg, f) == getattr(model.tokenizer.cfg, f), (kind, f)
    # a raster checkpoint written before the rename: its config says vocab_size
    raster = models["raster"]
    old = {**{k: v for k, v in raster.cfg.__dict__.items() if k != "codebook_size"}, "vocab_size": 32}
    assert type(raster).config_from(old) == raster.cfg
    assert type(models["vqvae"]).config_from({**models["vqvae"].cfg.__dict__, "code_dim": 8}).code_dim == 8
    legacy = {k: v for k, v in models["vqvae"].cfg.__dict__.items() if k != "code_dim"}
    assert type(models["vqvae"]).config_from({**legacy, "embed_dim": 4}).code_dim == 4
    from minivar.config import with_overrides
    cfg = tiny_train_config(tmp_path)
    with pytest.raises(ValueError, match="embed_dim is called code_dim now: --set code_dim=4"):
        with_overrides(cfg, ["embed_dim=4"])


def test_the_package_passes_its_linter_with_the_complexity_limit():
    """ruff with the project's settings (pyproject.toml), C901 included: no function of the package, the tests, the
    exercises or the benchmarks branches more than the limit, the training loop included."""
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "minivar", "tests", "exercises",
                           "benchmarks", "conftest.py"], cwd=ROOT, capture_output=True, text=True)
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    limit = re.search(r"max-complexity = (\d+)", (ROOT / "pyproject.toml").read_text())
    assert limit and int(limit.group(1)) <= 15, "the complexity limit was raised"


# ------------------------------------------------------------------------------------------ import circles

def package_imports(package: Path) -> dict:
    """module -> the package modules it imports, anywhere in the file (function-level imports count too)."""
    modules = {p.stem for p in package.glob("*.py")} - {"__init__"}
    edges = {m: set() for m in modules}
    for m in modules:
        for node in ast.walk(ast.parse((package / f"{m}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package.name + "."):
                names = [node.module.split(".")[1]]
            elif isinstance(node, ast.Import):
                names = [a.name.split(".")[1] for a in node.names if a.name.startswith(package.name + ".")]
            else:
                continue
            edges[m] |= {n for n in names if n in modules and n != m}
    return edges


def find_circle(edges: dict):
    """A list of modules forming an import circle, or None (depth-first search for a back edge)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (circle := visit(n)):
                return circle
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(edges):
        if m not in state and (circle := visit(m)):
            return circle
    return None


def test_the_package_has_no_import_circles():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check can fail
    circle = find_circle(package_imports(ROOT / "minivar"))
    assert circle is None, " -> ".join(circle)
