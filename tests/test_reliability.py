"""No lost file, no run that corrupts another, no run that carries on when it should stop: the concurrent, kill
and mid-write cases beside the one-line refusals of test_bad_input.py. Each lost-data case checks that the
earlier file or run is intact afterwards."""

import csv
import errno
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from minivar import course
from minivar import train as train_module
from minivar.__main__ import main
from minivar.checkpoint import TrainingDiverged, load_checkpoint
from minivar.files import FolderInUse, PathLock, append_csv_row, atomic_write, write_json
from minivar.sweep import run_ablation
from minivar.train import train
from minivar.viz import save_grid
from tests.helpers import tiny_generator_runs, tiny_train_config

ROOT = Path(__file__).resolve().parent.parent


def small_train_argv(out_dir, *sets):
    small = ["ch=8", "ch_mult=1,2", "batch_size=8", "eval_batches=1", "log_every=1", f"out_dir={out_dir}"]
    return ["train", "emoji-vqvae", *[a for s in small + list(sets) for a in ("--set", s)]]


def start_holder(code: str) -> subprocess.Popen:
    """A second process, the way a second terminal would run one; it prints 'held' once it owns what it locks."""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = proc.stdout.readline()
    assert line.strip() == "held", line + proc.stdout.read()
    return proc


def hold(path) -> subprocess.Popen:
    return start_holder(f"import time; from minivar.files import PathLock\n"
                        f"with PathLock({str(path)!r}):\n    print('held', flush=True); time.sleep(120)")


def stop(proc):
    proc.kill()
    proc.wait()


# ----------------------------------------------------------------------------- one owner per run, table, grades

def test_a_second_train_of_the_same_run_is_refused_and_a_killed_owner_leaves_no_stale_lock(tmp_path, capsys):
    run = tmp_path / "emoji-vqvae"
    argv = small_train_argv(tmp_path, "max_steps=100000", "ckpt_every=5", "eval_every=100000")
    code = ("import sys, minivar.files as f\n"
            "enter = f.PathLock.__enter__\n"
            "def announce(self):\n"
            "    out = enter(self); print('held', flush=True); return out\n"
            "f.PathLock.__enter__ = announce\n"
            f"from minivar.__main__ import main; sys.exit(main({argv!r}))")
    first = start_holder(code)  # a real `train`, holding its run folder
    try:
        deadline = time.time() + 120
        while not (run / "ckpt.pt").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (run / "ckpt.pt").exists(), "the first run never saved"
        config_before = (run / "config.json").read_text()
        assert main(small_train_argv(tmp_path, "max_steps=3", "lr=5e-3") + ["--resume"]) == 2
        err = capsys.readouterr().err
        assert f"in use by process {first.pid}" in err and "--set name=" in err, err
        assert (run / "config.json").read_text() == config_before  # the second run wrote nothing
    finally:
        first.send_signal(signal.SIGKILL)  # kill -9: no handler runs, the lock file stays behind
        first.wait()
    for line in (run / "metrics.jsonl").read_text().splitlines()[:-1]:  # one writer: every whole line is a record
        json.loads(line)
    assert load_checkpoint(run / "ckpt.pt")["config"]["lr"] == json.loads(config_before)["lr"]
    assert main(small_train_argv(tmp_path, "max_steps=100000", "ckpt_every=5", "eval_every=100000", "minutes=0.02")
                + ["--resume"]) == 0  # the OS released the dead owner's lock
    assert not (tmp_path / ".emoji-vqvae.lock").exists()  # an owner that finishes cleans up


def test_a_sheet_table_and_a_grades_folder_have_one_owner(tmp_path):
    holder = hold(tmp_path / "ablations_01.csv")
    try:
        with pytest.raises(FolderInUse, match=f"in use by process {holder.pid}"):
            run_ablation("01", out_dir=tmp_path, runs_dir=tmp_path / "runs", progress=False)
    finally:
        stop(holder)
    assert not (tmp_path / "ablations_01.csv").exists()
    submissions = tmp_path / "submissions"
    (submissions / "alice" / "exercises").mkdir(parents=True)
    holder = hold(submissions / "grades.csv")
    try:
        with pytest.raises(FolderInUse, match="Wait for that grading to finish"):
            course.grade(submissions, exercises=["ex01"])
    finally:
        stop(holder)


def test_a_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    with PathLock(tmp_path / "run"):
        with PathLock(tmp_path / "run"):  # a sweep row's run inside the sweep's own lock, for instance
            pass
        assert (tmp_path / ".run.lock").exists()
    assert not (tmp_path / ".run.lock").exists()
    with PathLock(tmp_path / "deeper" / "still" / "run"):
        pass
    assert not (tmp_path / "deeper").exists()  # a lock leaves no empty folders behind


# --------------------------------------------------------------------------------- writes that land whole or not

def fail_midway(fh, *args, **kwargs):
    fh.write(b"half a file")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_every_writer_keeps_the_earlier_file_when_a_write_fails_midway(tmp_path, monkeypatch):
    grid, table, manifest = tmp_path / "grid.png", tmp_path / "t.csv", tmp_path / "m.json"
    save_grid(grid, torch.zeros(2, 3, 8, 8))
    append_csv_row(table, ["a", "b"], {"a": 1, "b": 2})
    write_json(manifest, {"ok": True})
    before = {p: p.read_bytes() for p in (grid, table, manifest)}
    from PIL import Image
    monkeypatch.setattr(Image.Image, "save", lambda self, fh, **k: fail_midway(fh))
    with pytest.raises(OSError, match="the earlier file is kept"):
        save_grid(grid, torch.ones(2, 3, 8, 8))
    monkeypatch.undo()

    def disk_full(fd):  # the temporary file is written, the disk fills before it is safely on it
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="the earlier file is kept"):
        append_csv_row(table, ["a", "b"], {"a": 3, "b": 4})
    with pytest.raises(OSError, match="the earlier file is kept"):
        write_json(manifest, {"ok": False})
    with pytest.raises(OSError, match="nothing was written"):
        write_json(tmp_path / "new.json", {"ok": False})
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in before} == before
    assert not (tmp_path / "new.json").exists()
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind
    with pytest.raises(RuntimeError):  # an error inside the block: nothing replaces the file
        with atomic_write(manifest) as fh:
            fh.write("{")
            raise RuntimeError("the writer failed")
    assert manifest.read_bytes() == before[manifest]
    (tmp_path / ".m.json.tmp999999999").write_text("{")  # left by a writer killed mid-write
    write_json(manifest, {"ok": 2})
    assert not (tmp_path / ".m.json.tmp999999999").exists() and json.loads(manifest.read_text()) == {"ok": 2}


@pytest.fixture(scope="module")
def generator_run(tmp_path_factory):
    return tiny_generator_runs(tmp_path_factory.mktemp("gen"))[1].run_dir


def test_sample_npz_written_whole_or_not_and_default_grids_never_overwrite_each_other(generator_run, tmp_path,
                                                                                        monkeypatch, capsys):
    npz = tmp_path / "s.npz"
    assert main(["sample", str(generator_run), "--n", "4", "--npz", str(npz), "--out", str(tmp_path / "a.png")]) == 0
    good = npz.read_bytes()
    monkeypatch.setattr(np, "savez", lambda fh, **k: fail_midway(fh))
    assert main(["sample", str(generator_run), "--n", "4", "--npz", str(npz), "--out", str(tmp_path / "b.png")]) == 2
    assert "the earlier file is kept" in capsys.readouterr().err
    assert npz.read_bytes() == good
    monkeypatch.undo()
    for extra in ([], ["--seed", "1"], ["--top-k", "5"], ["--temperature", "0.5"], ["--n", "3"]):
        assert main(["sample", str(generator_run), "--n", "4", *extra]) == 0
    grids = sorted(p.name for p in generator_run.glob("samples_*.png"))
    assert len(grids) == 5, grids  # one picture per sampling, none overwritten
    assert "samples_guidance2_seed1_n4.png" in grids and "samples_guidance2_top-k5_seed0_n4.png" in grids


# ---------------------------------------------------------------------------------------------- grades merge

def test_grading_one_exercise_keeps_the_other_exercises_grades(tmp_path, monkeypatch):
    submissions = tmp_path / "submissions"
    for student in ("alice", "bob"):
        (submissions / student / "exercises").mkdir(parents=True)
    earlier = [{"student": s, "exercise": e, "part": p, "name": f"test_{e}_{p}", "points": 1, "message": ""}
               for s in ("alice", "bob") for e in ("ex01", "ex02") for p in (1, 2)]
    course.write_tables(earlier, submissions)

    def regrade(student, files, graders, limits):  # ex02 graded again: alice now fails its part 2
        return [{"student": student, "exercise": "ex02", "part": p, "name": f"test_ex02_{p}",
                 "points": int(not (student == "alice" and p == 2)), "weight": 1.0, "file": "ex02_codebook.py",
                 "others": "", "flags": "", "message": "wrong" if (student == "alice" and p == 2) else ""}
                for p in (1, 2)]
    monkeypatch.setattr(course, "grade_submission", regrade)
    course.grade(submissions, exercises=["ex02"])
    with open(submissions / "grades.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8  # ex01's rows are still there
    assert {(r["student"], r["exercise"], r["part"]): r["points"] for r in rows}[("alice", "ex02", "2")] == "0"
    assert sum(r["exercise"] == "ex01" and r["points"] == "1" for r in rows) == 4
    md = (submissions / "grades.md").read_text()
    assert "ex01 (2 parts, 2 pts)" in md and "ex02 (2 parts" in md and "| alice | 2 | 1 | 3 / 4 |" in md


# ------------------------------------------------------------------------------ runs that must stop, and say why

def test_a_run_that_diverges_stops_at_that_step_and_keeps_its_last_finite_checkpoint(tmp_path, monkeypatch):
    real = train_module.compute_loss

    def goes_bad(objective, x, labels, progress, step):
        loss, metrics = real(objective, x, labels, progress, step)
        return (loss * math.nan if step >= 3 else loss), metrics  # the 4th step's loss is NaN
    monkeypatch.setattr(train_module, "compute_loss", goes_bad)
    cfg = tiny_train_config(tmp_path, max_steps=10, ckpt_every=2, eval_every=100, log_every=1)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 4: .*last finite loss logged was .* at step 3"
                                               r".*still holds step 2.*learning rate"):
        train(cfg, progress=False)
    ckpt = load_checkpoint(cfg.run_dir / "ckpt.pt")
    assert ckpt["step"] == 2 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_a_huge_learning_rate_stops_with_a_sentence_not_nan_weights(tmp_path, capsys):
    assert main(small_train_argv(tmp_path, "lr=1e9", "max_steps=30", "eval_every=1000", "ckpt_every=1000")) == 2
    err = capsys.readouterr().err
    assert "training diverged at step" in err and "try a tenth" in err, err
    assert not (tmp_path / "emoji-vqvae" / "ckpt.pt").exists()  # no NaN weights saved


def test_grad_clip_zero_turns_clipping_off_instead_of_zeroing_every_gradient(tmp_path):
    cfg = tiny_train_config(tmp_path, grad_clip=0.0, max_steps=3, eval_every=100, weight_decay=0.0)
    torch.manual_seed(cfg.seed)
    from minivar.models import build
    init = build(cfg.model, cfg.model_config).state_dict()
    trained = train(cfg, progress=False)["model"].state_dict()
    moved = [k for k in init if init[k].is_floating_point() and not torch.equal(init[k], trained[k])]
    assert len(moved) > len(init) // 2, "the weights did not train"
    log = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r["grad_norm"] > 0 for r in log)


def test_resume_refuses_other_training_settings_and_takes_a_new_budget(tmp_path):
    cfg = tiny_train_config(tmp_path, max_steps=2, eval_every=100)
    train(cfg, progress=False)
    for field, value in (("lr", 1e-2), ("seed", 3), ("batch_size", 8), ("weight_decay", 0.1)):
        other = tiny_train_config(tmp_path, max_steps=4, eval_every=100, **{field: value})
        with pytest.raises(ValueError, match=f"was trained with {field}=.*this resume asks {field}="):
            train(other, resume=True, progress=False)
    assert load_checkpoint(cfg.run_dir / "ckpt.pt")["step"] == 2  # untouched
    longer = tiny_train_config(tmp_path, max_steps=4, eval_every=100)
    assert train(longer, resume=True, progress=False)["step"] == 4
    assert json.loads((cfg.run_dir / "config.json").read_text())["max_steps"] == 4  # the change is recorded


def write_folder(root: Path, colour) -> Path:
    from PIL import Image
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), tuple(int(v) for v in np.clip(np.array(colour) + 40 * c + 9 * i, 0, 255))).save(
                root / name / f"{i}.png")
    return root


def test_the_token_cache_is_keyed_by_the_images_not_only_the_tokenizer(generator_run, tmp_path):
    from minivar import load
    from minivar.data import load_dataset
    from minivar.token_cache import token_dataset
    tokenizer = load(generator_run).tokenizer
    a, b = write_folder(tmp_path / "A", (20, 60, 200)), write_folder(tmp_path / "B", (230, 120, 10))
    kw = dict(cache_dir=tmp_path / "tokens", progress=False, flip=False)
    codes_a = token_dataset(tokenizer, "folder", "train", root=a, **kw).all_codes()
    codes_b = token_dataset(tokenizer, "folder", "train", root=b, **kw).all_codes()  # the same cache file name
    images_b = torch.stack([x for x, _ in load_dataset("folder", "train", root=b)])
    assert torch.equal(codes_b, tokenizer.encode(images_b).long()) and not torch.equal(codes_a, codes_b)
    time.sleep(0.01)
    write_folder(tmp_path / "extra", (0, 0, 0))
    os.replace(tmp_path / "extra" / "cat" / "0.png", b / "cat" / "9.png")  # a file added to B
    assert len(token_dataset(tokenizer, "folder", "train", root=b, **kw)) == 7


# --------------------------------------------------------------------------- data read as a user would expect

def test_a_folder_test_split_keeps_the_training_classes_and_files_are_read_once(tmp_path):
    from PIL import Image

    from minivar.data import load_dataset
    for split, classes in (("train", ("cat", "dog", "fox")), ("test", ("dog", "fox"))):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / split / c / "0.png")
    test = load_dataset("folder", "test", root=tmp_path, image_size=8)
    assert [test.classes[y] for _, y in test] == ["dog", "fox"] and test.classes == ["cat", "dog", "fox"]
    os.symlink(tmp_path / "train" / "cat", tmp_path / "train" / "cat" / "loop")  # a link loop
    os.symlink(tmp_path / "train" / "cat" / "0.png", tmp_path / "train" / "cat" / "again.png")  # the same file twice
    assert len(load_dataset("folder", "train", root=tmp_path, image_size=8)) == 3
    (tmp_path / "test" / "owl").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "test" / "owl" / "0.png")
    with pytest.raises(ValueError, match="class folders the training split lacks: owl"):
        load_dataset("folder", "test", root=tmp_path, image_size=8)


def test_sixteen_bit_and_transparent_images_load_as_they_look(tmp_path):
    from PIL import Image

    from minivar.data import load_dataset
    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(tmp_path / "a" / "grey16.png")  # mid grey, 16 bits
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red under fully transparent pixels: the picture shows nothing there
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a" / "clear.png")
    d = load_dataset("folder", "train", root=tmp_path, image_size=8)
    clear, grey = d[0][0], d[1][0]  # sorted by name
    torch.testing.assert_close(clear, torch.ones_like(clear))  # white, as a viewer draws it
    assert abs(float(grey.mean())) < 0.02  # mid grey, not clipped to white


def write_imagenet_file(path, labels, width=12288, **extra):
    np.savez(path, data=np.zeros((len(labels), width), np.uint8), labels=np.asarray(labels), **extra)


def test_imagenet64_labels_and_files_are_checked(tmp_path):
    from minivar.data import load_dataset
    folder = tmp_path / "imagenet64"
    folder.mkdir()
    write_imagenet_file(folder / "val_data.npz", [0, 5, 999])  # already 0-based: taken as is
    assert load_dataset("imagenet64", "test", image_size=64, root=tmp_path).labels.tolist() == [0, 5, 999]
    write_imagenet_file(folder / "val_data.npz", [1, 6, 1000])  # the official 1-based files
    assert load_dataset("imagenet64", "test", image_size=64, root=tmp_path).labels.tolist() == [0, 5, 999]
    write_imagenet_file(folder / "val_data.npz", [0, 1000])
    with pytest.raises(ValueError, match="val_data.npz: labels 0..1000"):
        load_dataset("imagenet64", "test", image_size=64, root=tmp_path)
    np.savez(folder / "val_data.npz", images=np.zeros((2, 12288), np.uint8))  # other keys
    with pytest.raises(ValueError, match="val_data.npz is truncated or not a downsampled-ImageNet batch"):
        load_dataset("imagenet64", "test", image_size=64, root=tmp_path)
    write_imagenet_file(folder / "val_data.npz", [1, 2], width=100)
    with pytest.raises(ValueError, match=r"expected 'data' of shape \(N, 12288\)"):
        load_dataset("imagenet64", "test", image_size=64, root=tmp_path)
    (folder / "val_data.npz").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ValueError, match="truncated"):
        load_dataset("imagenet64", "test", image_size=64, root=tmp_path)
    for k in (1, 3):
        write_imagenet_file(folder / f"train_data_batch_{k}.npz", [1, 2])
    write_imagenet_file(folder / "train_data_batch_1_old.npz", [1, 2])  # a stray copy: not read, no crash
    with pytest.raises(FileNotFoundError, match="lacks train_data_batch_2.npz"):
        load_dataset("imagenet64", "train", image_size=64, root=tmp_path)
    write_imagenet_file(folder / "train_data_batch_2.npz", [1, 2])
    assert len(load_dataset("imagenet64", "train", image_size=64, root=tmp_path)) == 6


def test_an_incomplete_or_damaged_cifar10_folder_names_the_file(tmp_path):
    from minivar.data import load_dataset
    from tests.test_data import write_cifar
    write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3 is missing.*delete .*cifar-10-batches-py"):
        load_dataset("cifar10", "train", root=tmp_path)
    (folder / "batches.meta").write_bytes(b"")
    with pytest.raises(ValueError, match="batches.meta is truncated or not a CIFAR-10 batch"):
        load_dataset("cifar10", "test", root=tmp_path)
    write_cifar(tmp_path / "again")
    folder = tmp_path / "again" / "cifar-10-batches-py"
    data = {"data": np.zeros((4, 100), np.uint8), "labels": [0, 1, 2, 3]}
    (folder / "test_batch").write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError, match="expected rows of 3072 bytes"):
        load_dataset("cifar10", "test", root=tmp_path / "again")
    (folder / "test_batch").write_bytes(pickle.dumps(data)[:20])
    with pytest.raises(ValueError, match="test_batch is truncated"):
        load_dataset("cifar10", "test", root=tmp_path / "again")


# ------------------------------------------------------------------------- generators at the edges of their input

@pytest.mark.parametrize("name", ["emoji-raster", "emoji-var", "emoji-flowar", "emoji-rar"])
def test_no_labels_give_no_samples_and_numpy_numbers_are_numbers(name):
    from minivar import pretrained
    model = pretrained.load(name)
    out = model.generate(torch.zeros(0, dtype=torch.long))
    shapes = [tuple(t.shape) for t in out] if isinstance(out, list) else [tuple(out.shape)]
    assert all(s[0] == 0 for s in shapes)
    assert model.sample_images(torch.zeros(0, dtype=torch.long)).shape == (0, 3, 32, 32)
    images = model.sample_images(np.array([1, 2]), guidance=np.float32(2.0), generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()
