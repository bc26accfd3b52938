import dataclasses
import json
import os
import signal

import pytest
import torch

import minivar.train as train_module
from minivar import recipes
from minivar.__main__ import main
from minivar.checkpoint import CheckpointError, load_checkpoint
from minivar.config import TrainConfig
from minivar.models import MODELS
from minivar.train import StepBatches, lr_at, train
from tests.helpers import crash_at_call, tiny_train_config


def test_a_tiny_run_learns(tmp_path):
    cfg = tiny_train_config(tmp_path, max_steps=60, eval_every=30, ckpt_every=30)
    result = train(cfg, progress=False)
    records = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 61))
    first = sum(r["recon"] for r in records[:5]) / 5
    last = sum(r["recon"] for r in records[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    for f in ("ckpt.pt", "preview.png", "loss.png", "config.json", "result.json"):
        assert (cfg.run_dir / f).exists(), f
    assert result["step"] == 60 and 5 < result["test_psnr"] < 60


def assert_same_run(dir_a, dir_b, result_a, result_b):
    """Bit for bit on the CPU: weights, optimizer state and every logged loss."""
    for (name, a), b in zip(result_a["model"].state_dict().items(), result_b["model"].state_dict().values()):
        assert torch.equal(a, b), name
    opt_a = load_checkpoint(dir_a / "tiny" / "ckpt.pt")["optimizer"]
    opt_b = load_checkpoint(dir_b / "tiny" / "ckpt.pt")["optimizer"]
    torch.testing.assert_close(opt_a["state"], opt_b["state"], rtol=0, atol=0)
    log_a = [json.loads(line) for line in (dir_a / "tiny" / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(line) for line in (dir_b / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_b] == [r["step"] for r in log_a]
    assert [r["loss"] for r in log_b] == [r["loss"] for r in log_a]


def test_a_killed_run_resumes_from_its_last_checkpoint_with_the_same_state(tmp_path, monkeypatch):
    straight = train(tiny_train_config(tmp_path / "a", max_steps=20, ckpt_every=10), progress=False)

    cfg = tiny_train_config(tmp_path / "b", max_steps=20, ckpt_every=10)
    crash_at_call(monkeypatch, 14, RuntimeError("killed"))  # dies during step 14; last checkpoint: step 10
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, progress=False)
    monkeypatch.undo()
    assert load_checkpoint(cfg.run_dir / "ckpt.pt")["step"] == 10
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, progress=False)
    resumed = train(cfg, resume=True, progress=False)
    assert resumed["step"] == 20
    assert_same_run(tmp_path / "a", tmp_path / "b", straight, resumed)


def test_ctrl_c_saves_a_checkpoint_and_resume_loses_nothing(tmp_path, monkeypatch):
    straight = train(tiny_train_config(tmp_path / "a", max_steps=16, ckpt_every=100), progress=False)

    cfg = tiny_train_config(tmp_path / "b", max_steps=16, ckpt_every=100)
    crash_at_call(monkeypatch, 8, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt, match=r"interrupted: .*ckpt.pt holds step 7; continue with --resume"):
        train(cfg, progress=False)
    monkeypatch.undo()
    assert load_checkpoint(cfg.run_dir / "ckpt.pt")["step"] == 7  # the 7 finished steps were kept
    resumed = train(cfg, resume=True, progress=False)
    assert_same_run(tmp_path / "a", tmp_path / "b", straight, resumed)


@pytest.mark.parametrize("signum, times, saved", [(signal.SIGTERM, 1, 8), (signal.SIGINT, 1, 8),
                                                  (signal.SIGINT, 2, 7)], ids=["sigterm", "ctrl-c", "ctrl-c twice"])
def test_a_signal_mid_step_lets_the_step_finish_then_saves_it(tmp_path, monkeypatch, signum, times, saved):
    """One signal inside step 8: step 8 is finished, saved, and the run resumes exactly. Twice: stop at once, keep 7."""
    straight = train(tiny_train_config(tmp_path / "a", max_steps=16, ckpt_every=100), progress=False)
    cfg = tiny_train_config(tmp_path / "b", max_steps=16, ckpt_every=100)
    real, calls, before = train_module.compute_loss, {"n": 0}, signal.getsignal(signum)

    def compute_loss(*args):
        calls["n"] += 1
        for _ in range(times if calls["n"] == 8 else 0):
            os.kill(os.getpid(), signum)  # delivered here, in the middle of the step
        return real(*args)

    monkeypatch.setattr(train_module, "compute_loss", compute_loss)
    with pytest.raises(KeyboardInterrupt, match=f"ckpt.pt holds step {saved}; continue with --resume"):
        train(cfg, progress=False)
    monkeypatch.undo()
    assert signal.getsignal(signum) is before  # the handlers are put back
    assert load_checkpoint(cfg.run_dir / "ckpt.pt")["step"] == saved
    assert_same_run(tmp_path / "a", tmp_path / "b", straight, train(cfg, resume=True, progress=False))


def test_resume_drops_log_lines_after_the_checkpoint(tmp_path):
    cfg = tiny_train_config(tmp_path, max_steps=10, ckpt_every=10)
    train(cfg, progress=False)
    log = cfg.run_dir / "metrics.jsonl"
    with open(log, "a") as fh:  # a run killed at step 12, after its last checkpoint at 10
        fh.write(json.dumps({"step": 11, "loss": 1.0}) + "\n" + json.dumps({"step": 12, "loss": 1.0}) + "\n")
    cfg.max_steps = 12
    train(cfg, resume=True, progress=False)
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 13))


def test_resume_refuses_a_different_model(tmp_path):
    cfg = tiny_train_config(tmp_path, max_steps=2)
    train(cfg, progress=False)
    cfg.model_config.codebook_size = 64
    with pytest.raises(ValueError, match="differs"):
        train(cfg, resume=True, progress=False)


def test_corrupt_or_truncated_checkpoint_gives_a_clear_error(tmp_path):
    cfg = tiny_train_config(tmp_path, max_steps=2)
    train(cfg, progress=False)
    path = cfg.run_dir / "ckpt.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="Delete it"):
        train(cfg, resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="train one first"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_is_loaded_with_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil(), "config": {}}, path)
    with pytest.raises(CheckpointError, match="safe loading refuses"):
        load_checkpoint(path)  # the safe unpickler refuses the callable instead of running it


def test_step_batches_are_a_function_of_the_step():
    a = StepBatches(100, 10, seed=3)
    b = StepBatches(100, 10, seed=3, start_step=7)
    it_a, it_b = iter(a), iter(b)
    seq_a = [next(it_a) for _ in range(12)]
    assert next(it_b) == seq_a[7]
    assert sorted(sum(seq_a[:10], [])) == list(range(100))  # one epoch covers every image once
    halves = [StepBatches(100, 10, seed=3, rank=r, world=2).indices(4) for r in range(2)]
    assert halves[0] + halves[1] == a.indices(4)
    with pytest.raises(ValueError, match="divisible"):
        StepBatches(100, 10, world=3)


def test_lr_schedule_warms_up_then_decays():
    cfg = tiny_train_config("/tmp", lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(cfg, 0, 0) == pytest.approx(0.1) and lr_at(cfg, 9, 0) == pytest.approx(1.0)
    assert lr_at(cfg, 60, 0) == pytest.approx(0.55) and lr_at(cfg, 110, 0) == pytest.approx(0.1)
    cfg.minutes = 1.0  # a time budget drives the cosine too
    assert lr_at(cfg, 20, 60.0) == pytest.approx(0.1)


def test_recipes_and_overrides():
    cfg = recipes.get("emoji-vqvae", ["lr=5e-4", "codebook_size=1024", "model.ch_mult=1,2,4", "flip=false"])
    assert cfg.lr == 5e-4 and cfg.model_config.codebook_size == 1024
    assert cfg.model_config.ch_mult == (1, 2, 4) and cfg.flip is False
    with pytest.raises(ValueError, match="emoji-vqvae, emoji-vqvae-l2, cifar10-vqvae"):
        recipes.get("emoji-gan")
    with pytest.raises(ValueError, match="valid keys: .*codebook_size"):
        recipes.get("emoji-vqvae", ["codebooksize=3"])
    with pytest.raises(ValueError, match="codebook_size expects an integer"):
        recipes.get("emoji-vqvae", ["codebook_size=many"])
    with pytest.raises(ValueError, match="divisible"):
        recipes.get("emoji-vqvae", ["image_size=30"])
    # a name both configs have: plain means the training one, "model." the model's; a mix-up names the fix
    cfg = recipes.get("emoji-vqvae", ["ema_weights=0.99", "ema=true"])  # the weights' average, the codebook's
    assert cfg.ema_weights == 0.99 and cfg.model_config.ema is True
    assert recipes.get("emoji-vqvae", ["model.ema=true"]).model_config.ema is True  # the model's field, explicitly
    with pytest.raises(ValueError, match="ema_weights is the weights' moving average, a decay in"):
        recipes.get("emoji-vqvae", ["ema_weights=1"])
    for kind, cls in MODELS.items():  # so every --set key names one field: no model config reuses a training name
        shared = {f.name for f in dataclasses.fields(cls.config_class)} & set(TrainConfig.__dataclass_fields__)
        assert not shared, f"{kind}'s config shares {shared} with TrainConfig"
    old = {**recipes.get("emoji-raster").to_dict(), "ema": 0.9}  # a checkpoint's config from before the rename
    old.pop("ema_weights")
    assert TrainConfig.from_saved(old).ema_weights == 0.9
    with pytest.raises(ValueError, match="no field 'lr'"):
        recipes.get("emoji-vqvae", ["model.lr=0.5"])
    for name in recipes.RECIPES:
        recipes.get(name)


def test_cli_errors_are_one_clear_line(capsys):
    assert main(["train", "nope"]) == 2
    assert "unknown recipe 'nope'; choose one of: emoji-vqvae, emoji-vqvae-l2" in capsys.readouterr().err
    assert main(["train", "emoji-vqvae", "--set", "lr"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_cli_train_and_resume(tmp_path, capsys):
    args = ["train", "emoji-vqvae", "--set", f"out_dir={tmp_path}", "--set", "max_steps=3", "--set", "ch=8",
            "--set", "ch_mult=1,2", "--set", "batch_size=8", "--set", "eval_batches=1"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 3
    assert main(args) == 2  # exists: asks for --resume
    assert main(args + ["--set", "max_steps=5", "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 5



def test_gan_and_perceptual_terms_train_and_resume(tmp_path, monkeypatch):
    import minivar.losses as losses_module
    real_init = losses_module.PerceptualLoss.__init__
    monkeypatch.setattr(losses_module.PerceptualLoss, "__init__",
                        lambda self, pretrained=True: real_init(self, pretrained=False))  # offline: random VGG
    cfg = tiny_train_config(tmp_path, max_steps=6, ckpt_every=3, perceptual_weight=1.0, disc_weight=0.5,
                            disc_start=3)
    result = train(cfg, progress=False)
    records = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "perceptual" in records[0] and "d_loss" not in records[2] and "d_loss" in records[3]
    assert all(r["adaptive_weight"] >= 0 for r in records[3:])
    ckpt = load_checkpoint(cfg.run_dir / "ckpt.pt")
    assert "discriminator" in ckpt and "optimizer_d" in ckpt
    cfg.max_steps = 8
    assert train(cfg, resume=True, progress=False)["step"] == 8
    assert result["step"] == 6


def test_a_moving_average_of_the_weights_is_kept_saved_loaded_and_resumed_exactly(tmp_path, monkeypatch):
    """cfg.ema_weights > 0: ema <- d * ema + (1 - d) * weights after every step (d warms up to it); load() and the
    final metrics use it, the raw weights resume training, and a killed run resumes to the same average."""
    from minivar import load
    cfg = tiny_train_config(tmp_path / "a", max_steps=12, ckpt_every=5, eval_every=100, ema_weights=0.7)
    result = train(cfg, progress=False)
    ckpt = load_checkpoint(cfg.run_dir / "ckpt.pt")
    assert set(ckpt["ema"]) == {k for k, v in ckpt["model"].items() if v.is_floating_point()}
    changed = [k for k in ckpt["ema"] if not torch.equal(ckpt["ema"][k], ckpt["model"][k])]
    assert changed, "the average equals the raw weights"
    loaded = load(cfg.run_dir).state_dict()
    for k, v in ckpt["ema"].items():
        assert torch.equal(loaded[k], v) and torch.equal(result["model"].state_dict()[k], v), k
    # the recursion itself, one step further by hand: ema_13 = d ema_12 + (1 - d) w_13, d = min(0.7, 13 / 22)
    more = tiny_train_config(tmp_path / "a", max_steps=13, ckpt_every=5, eval_every=100, ema_weights=0.7)
    train(more, resume=True, progress=False)
    ckpt13 = load_checkpoint(cfg.run_dir / "ckpt.pt")
    k = changed[0]
    d = min(0.7, 13 / 22)  # the decay warms up: (1 + t) / (10 + t) until it reaches cfg.ema_weights
    torch.testing.assert_close(ckpt13["ema"][k], d * ckpt["ema"][k] + (1 - d) * ckpt13["model"][k])

    killed = tiny_train_config(tmp_path / "b", max_steps=12, ckpt_every=5, eval_every=100, ema_weights=0.7)
    crash_at_call(monkeypatch, 9, RuntimeError("killed"))
    with pytest.raises(RuntimeError, match="killed"):
        train(killed, progress=False)
    monkeypatch.undo()
    train(killed, resume=True, progress=False)
    again = load_checkpoint(killed.run_dir / "ckpt.pt")
    for k, v in ckpt["ema"].items():
        assert torch.equal(again["ema"][k], v), f"{k}: the resumed run's average differs"
    with pytest.raises(ValueError, match="a decay in \\[0, 1\\).*--set ema_weights=0.999"):
        tiny_train_config(tmp_path / "c", ema_weights=1.0).check_numbers()


def accumulated_gradients(cfg, x, labels, step=0):
    """The gradients of the model (and of the discriminator, after its own step) from one accumulated step."""
    from contextlib import nullcontext

    from minivar.models import build
    torch.manual_seed(0)  # the same initial weights for every grad_accum
    model = build(cfg.model, cfg.model_config)
    objective = train_module.make_objective(cfg, model, torch.device("cpu"), wrap=lambda m: m)
    state = train_module.RunState(model, train_module.adamw(model, cfg), objective, 0.0)
    loss, metrics = train_module.accumulate(cfg, state, x, labels, nullcontext())
    metrics.update(objective.update(step, nullcontext()))
    disc = getattr(getattr(objective, "terms", None), "discriminator", None)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss, metrics, grads, ({n: p.grad.clone() for n, p in disc.named_parameters()} if disc else {})


def test_gradient_accumulation_makes_the_whole_batchs_update_in_slices(tmp_path):
    """grad_accum=n: the batch in n slices, each slice's loss / n backpropagated: the same loss and gradients as the
    whole batch at once (up to float rounding), the memory of one slice."""
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    labels = torch.zeros(8, dtype=torch.long)
    cfg = tiny_train_config(tmp_path, batch_size=8)
    whole_loss, whole_metrics, whole, _ = accumulated_gradients(cfg, x, labels)
    for n in (2, 4):
        loss, metrics, grads, _ = accumulated_gradients(dataclasses.replace(cfg, grad_accum=n), x, labels)
        torch.testing.assert_close(loss, whole_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(metrics["recon"], whole_metrics["recon"], rtol=1e-5, atol=1e-6)
        assert grads.keys() == whole.keys()
        for name, g in grads.items():
            torch.testing.assert_close(g, whole[name], rtol=1e-4, atol=1e-6, msg=name)
    # the discriminator's step runs over the same slices (its BatchNorm sees one slice at a time: close, not equal)
    gan = tiny_train_config(tmp_path, batch_size=8, disc_weight=0.5, adaptive_disc_weight=False)
    _, metrics, _, disc_whole = accumulated_gradients(gan, x, labels)
    _, metrics2, _, disc_sliced = accumulated_gradients(dataclasses.replace(gan, grad_accum=2), x, labels)
    assert "d_loss" in metrics2 and torch.isfinite(metrics2["d_loss"])
    assert disc_sliced.keys() == disc_whole.keys() and all(g.abs().sum() > 0 for g in disc_sliced.values())


def test_gradient_accumulation_trains_resumes_and_refuses_uneven_slices(tmp_path):
    with pytest.raises(ValueError, match="grad_accum=3 must divide batch_size=16"):
        tiny_train_config(tmp_path, grad_accum=3)
    cfg = tiny_train_config(tmp_path, max_steps=4, ckpt_every=2, grad_accum=2)
    assert train(cfg, progress=False)["step"] == 4
    # a machine setting: a run may resume on a card that needs another accumulation
    assert train(dataclasses.replace(cfg, max_steps=6, grad_accum=4), resume=True, progress=False)["step"] == 6
