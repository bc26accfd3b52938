"""The recorded-experiment runner of the ablation sheets: rows land in a CSV once, with their curves."""

import csv

import pytest
import torch

from minivar import sweep

TINY = ["ch=8", "z_channels=8", "codebook_size=16", "code_dim=4", "batch_size=16", "eval_batches=1", "log_every=1"]


def test_an_ablation_sheet_records_each_row_once_with_its_curve(tmp_path, monkeypatch):
    monkeypatch.setitem(sweep.ABLATIONS, "t", dict(title="tiny", steps=3, rows=[
        ("uniform init", "emoji-vqvae", TINY, None),
        ("data init", "emoji-vqvae", TINY + ["codebook_init=data", "max_steps=4"], None)]))  # a row's own steps
    out, runs = tmp_path / "results", tmp_path / "runs"
    rows = sweep.run_ablation("t", out_dir=out, runs_dir=runs, progress=False)
    assert [r["row"] for r in rows] == ["uniform init", "data init"]
    assert [r["steps"] for r in rows] == ["3", "4"]
    for r in rows:
        assert 0 < float(r["psnr"]) < 60 and 0 < float(r["usage"]) <= 1
        assert float(r["fd_emoji_recon"]) > 0 and r["command"] == "python -m minivar sweep ablation --sheet t"
    assert (out / "ablations_t" / "data-init.jsonl").read_text().count("\n") >= 3
    # started on the data, the tiny codebook is used more than when it starts near the origin
    assert float(rows[1]["usage"]) >= float(rows[0]["usage"])
    (runs / "t" / "data-init" / "ckpt.pt").unlink()  # a finished row is not trained (or loaded) again
    again = sweep.run_ablation("t", out_dir=out, runs_dir=runs, progress=False)
    assert len(again) == 2 and len(list(csv.DictReader(open(out / "ablations_t.csv")))) == 2


def test_a_sampling_row_measures_a_shipped_generator_with_its_options(tmp_path, monkeypatch):
    from minivar import pretrained
    seen = []
    monkeypatch.setattr(pretrained, "measure", lambda model, **kw: seen.append(kw) or {
        "guidance": kw["guidance"], "fd_emoji": 5.0, "fd_emoji_ci95": [4.0, 6.0], "precision": 0.9, "recall": 0.5})
    monkeypatch.setitem(sweep.ABLATIONS, "s", dict(title="sampling", steps=0, rows=[
        ("constant 2", "pretrained:emoji-raster", [], 2.0, {"temperature": 0.9})]))
    rows = sweep.run_ablation("s", out_dir=tmp_path, runs_dir=tmp_path / "runs", n=7, progress=False)
    assert seen == [dict(n=7, guidance=2.0, progress=False, temperature=0.9)]
    assert rows[0]["options"] == "temperature=0.9" and rows[0]["steps"] == "2000" and rows[0]["fd_high"] == "6.0"
    assert not (tmp_path / "runs").exists(), "a sampling row trains nothing"


def test_a_row_can_measure_the_run_an_earlier_row_trained_with_other_sampling_options(tmp_path, monkeypatch):
    from minivar import pretrained
    seen = []
    monkeypatch.setattr(pretrained, "measure", lambda model, **kw: seen.append((model, kw)) or {
        "guidance": kw["guidance"], "fd_emoji": 5.0, "fd_emoji_ci95": [4.0, 6.0], "precision": 0.9, "recall": 0.5})
    tiny_var = ["dim=32", "depth=1", "n_head=4", "batch_size=8", "eval_batches=1", "log_every=1"]
    monkeypatch.setitem(sweep.ABLATIONS, "r", dict(title="reuse", steps=2, rows=[
        ("small VAR", "emoji-var", tiny_var, 2.5),
        ("small VAR, top-p 0.8", "row:small VAR", [], 4.0, {"top_p": 0.8})]))
    rows = sweep.run_ablation("r", out_dir=tmp_path, runs_dir=tmp_path / "runs", n=5, progress=False)
    assert [r["steps"] for r in rows] == ["2", "2"] and rows[1]["options"] == "top_p=0.8"
    assert seen[1][1] == dict(n=5, guidance=4.0, progress=False, top_p=0.8)
    first, second = (dict(m.named_parameters()) for m, _ in seen)  # the same weights, loaded again
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert len(list((tmp_path / "runs" / "r").iterdir())) == 2  # the run and the shared token cache; no second run
    monkeypatch.setitem(sweep.ABLATIONS, "bad", dict(title="bad", steps=2, rows=[
        ("later", "row:nothing above", [], 2.5)]))
    with pytest.raises(ValueError, match="no earlier row"):
        sweep.run_ablation("bad", out_dir=tmp_path, runs_dir=tmp_path / "runs", progress=False)


def test_an_unknown_sheet_names_the_ones_there_are():
    with pytest.raises(ValueError, match="01"):
        sweep.run_ablation("99")


def test_a_sheets_results_table_quotes_its_recorded_rows():
    """A sheet's table row named like a recorded row gives that row's fd_emoji, interval, precision and recall."""
    import csv
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    checked = 0
    for csv_path in sorted((root / "benchmarks" / "results").glob("ablations_*.csv")):
        sheet = csv_path.stem.removeprefix("ablations_")
        recorded = {r["row"]: r for r in csv.DictReader(open(csv_path))}
        for md in (root / "exercises" / "ablations").glob(f"{sheet}_*.md"):
            for line in md.read_text().splitlines():
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                r = recorded.get(cells[0].strip("`")) if line.startswith("|") else None
                at = next((i for i, c in enumerate(cells) if " [" in c and c.endswith("]")), None)
                if r is None or not r["fd_emoji"] or at is None:
                    continue
                fd, low, high = (float(r[k]) for k in ("fd_emoji", "fd_low", "fd_high"))
                assert cells[at] == f"{fd:.2f} [{low:.2f}, {high:.2f}]", (md.name, cells[0])
                # precision and recall follow the interval
                assert cells[at + 1:at + 3] == [f"{float(r['precision']):.2f}", f"{float(r['recall']):.2f}"], \
                    (md.name, cells[0])
                checked += 1
    assert checked >= 14  # sheet 05b's rows at least
