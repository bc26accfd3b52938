"""The instructor's commands: the student release holds no solution or key and its graders work; grading runs each
submission in a sandbox with a time limit and writes the points table (tests/test_grading_isolation.py: the
dishonest ones)."""

import csv
import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest

from minivar.__main__ import main
from minivar.course import ReleaseError, code_of, grader_parts, release, solution_lines, strip_blocks

ROOT = Path(__file__).resolve().parents[1]


def test_strip_blocks_replaces_each_block_keeps_the_rest_and_refuses_an_open_one():
    text = "a\n    ### BEGIN SOLUTION\n    x = 1\n    ### END SOLUTION\nb\n"
    out, removed = strip_blocks(text, "### BEGIN SOLUTION", "### END SOLUTION", lambda indent: f"{indent}STUB\n")
    assert out == "a\n    STUB\nb\n" and removed == ["    x = 1\n"]
    with pytest.raises(ReleaseError, match="never closed"):
        strip_blocks("a\n### BEGIN SOLUTION\nx\n", "### BEGIN SOLUTION", "### END SOLUTION", where="nb")


@pytest.fixture(scope="module")
def student_copy(tmp_path_factory):
    out = tmp_path_factory.mktemp("release") / "student"
    summary = release(out)
    return out, summary


def test_the_release_has_no_solutions_no_keys_and_blanks_the_marked_cells(student_copy):
    out, summary = student_copy
    assert not (out / "exercises" / "solutions").exists()
    assert {p.relative_to(out).parts[1] for p in (out / "tests").rglob("*") if p.is_file()} == {"fixtures"}
    assert not list((out / "tests").rglob("*.py"))  # the goldens only: no tests, no wrong answers
    assert (out / "minivar" / "course.py").is_file() and (out / "data" / "emoji.npz").is_file()
    assert (out / "exercises" / "test_ex07.py").is_file() and (out / "exercises" / "_grading.py").is_file()
    answers = [code_of(line) for p in (ROOT / "exercises" / "solutions").glob("*.py")
               for line in solution_lines(p.read_text()) if len(code_of(line)) >= 20
               and not re.match(r"\s*(for|if|while|with)\b.*:$", line)]  # a bare loop header is no answer
    assert answers
    released = re.sub(r"\s+", "", "\n".join(p.read_text().replace("\\n", "\n") for p in out.rglob("*")
                                              if p.suffix in (".py", ".md", ".ipynb")
                                              and p.relative_to(out).parts[0] != "minivar"))
    assert not [a for a in answers if a in released]  # not even inside a longer line
    sheet = (out / "exercises" / "ablations" / "07_rar.md").read_text()
    assert "## Questions to predict before running" in sheet and "Answers the recorded results give" not in sheet
    nb = json.loads((out / "notebooks" / "01_vector_quantization.ipynb").read_text())
    blanked = [c for c in nb["cells"] if "raise NotImplementedError" in "".join(c["source"])]
    assert blanked and all(c["outputs"] == [] for c in blanked)
    assert "return z + (z_q - z).detach()" not in json.dumps(nb)
    assert summary["blanked_cells"] >= 4 and summary["keys"] >= 1


def test_the_released_graders_fail_on_the_blanks_and_pass_on_the_solutions(student_copy, tmp_path):
    import subprocess
    import sys
    copy = tmp_path / "copy"
    shutil.copytree(student_copy[0], copy)

    def grade_ex07():
        return subprocess.run([sys.executable, "-m", "pytest", "-m", "ex07", "-p", "no:cacheprovider", "-q",
                               "exercises"], cwd=copy, capture_output=True, text=True, timeout=300)
    proc = grade_ex07()
    assert proc.returncode == 1 and "4 failed" in proc.stdout, proc.stdout[-2000:]
    shutil.copy(ROOT / "exercises" / "solutions" / "ex07_randomized_ar.py", copy / "exercises")
    proc = grade_ex07()
    assert proc.returncode == 0 and "4 passed" in proc.stdout, proc.stdout[-2000:]


def test_a_release_that_would_leak_is_deleted_and_other_mistakes_are_refused(tmp_path):
    root = tmp_path / "course"
    (root / "exercises" / "solutions").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "exercises" / "solutions" / "ex01_x.py").write_text(
        'def f(x):\n    """Doc."""\n    return (x * 2).clamp(min=0).sum(dim=1)\n')
    (root / "exercises" / "ex01_x.py").write_text('def f(x):\n    """Doc."""\n    raise NotImplementedError\n')
    nb = {"cells": [{"cell_type": "code", "source": ["y = (x * 2).clamp(min=0).sum(dim=1)\n"], "outputs": [],
                     "execution_count": None, "metadata": {}}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (root / "notebooks" / "n.ipynb").write_text(json.dumps(nb))
    with pytest.raises(ReleaseError, match=r"solution or key text \(1 lines\).*n.ipynb"):
        release(tmp_path / "out", root=root)
    assert not (tmp_path / "out").exists()
    nb["cells"][0]["source"] = ["### BEGIN SOLUTION\n", "y = (x * 2).clamp(min=0).sum(dim=1)\n",
                                "### END SOLUTION\n"]
    (root / "notebooks" / "n.ipynb").write_text(json.dumps(nb))
    assert release(tmp_path / "out", root=root)["blanked_cells"] == 1
    with pytest.raises(ReleaseError, match="is not empty.*--force"):
        release(tmp_path / "out", root=root)
    release(tmp_path / "out", root=root, force=True)
    for unsafe in (root, tmp_path, root / "notebooks"):  # --force must never delete the checkout itself
        with pytest.raises(ReleaseError, match="holds or lies inside the files being released"):
            release(unsafe, root=root, force=True)
    assert (root / "exercises" / "solutions" / "ex01_x.py").is_file()
    with pytest.raises(ReleaseError, match="not an instructor's checkout"):
        release(tmp_path / "out2", root=tmp_path / "out")


@pytest.mark.slow
def test_grading_runs_each_submission_apart_with_a_time_limit_and_writes_the_table(tmp_path, capsys):
    subs = tmp_path / "submissions"
    solution = (ROOT / "exercises" / "solutions" / "ex07_randomized_ar.py").read_text()
    stub = (ROOT / "exercises" / "ex07_randomized_ar.py").read_text()
    looping = solution.replace("def random_order_ratio(progress: float, anneal_start: float, anneal_end: float) "
                               "-> float:\n", "def random_order_ratio(progress: float, anneal_start: float, "
                               "anneal_end: float) -> float:\n    while True:\n        pass\n", 1)
    assert looping != solution
    cheat = stub + textwrap.dedent("""
        from minivar.rar import random_order_ratio, sample_orders, slot_positions  # noqa
    """)
    for student, text in [("alice", solution), ("bob", stub), ("carol", looping), ("dave", cheat)]:
        (subs / student / "exercises").mkdir(parents=True)
        (subs / student / "exercises" / "ex07_randomized_ar.py").write_text(text)
    (subs / "erin").mkdir()  # handed in nothing
    assert main(["course", "grade", str(subs), "--exercises", "ex07", "--timeout", "30"]) == 0
    assert "graded 5 submissions: 7 of 20 parts passed" in capsys.readouterr().out
    rows = list(csv.DictReader(open(subs / "grades.csv")))
    points = {(r["student"], int(r["part"])): (int(r["points"]), r["message"]) for r in rows}
    assert [points["alice", p][0] for p in (1, 2, 3, 4)] == [1, 1, 1, 1]
    assert all(points["bob", p][0] == 0 and "Part" in points["bob", p][1] for p in (1, 2, 3, 4))
    assert points["carol", 1][0] == 0 and "still running after 30 s" in points["carol", 1][1]
    assert [points["carol", p][0] for p in (2, 3, 4)] == [1, 1, 1]  # one endless part costs only that part
    assert all("uses minivar" in points["dave", p][1] for p in (1, 2, 3, 4))
    assert all("no ex07_*.py" in points["erin", p][1] for p in (1, 2, 3, 4))
    table = (subs / "grades.md").read_text()
    assert "| alice | 3 | 3 / 3 |" in table and "| bob | 0 | 0 / 3 |" in table
    assert "| carol | 2.25 | 2.25 / 3 |" in table  # three of four parts at 0.75
    assert "**carol**, ex07 part 1 (`test_part1_random_order_ratio`): random_order_ratio() was still running" in table
    assert main(["course", "grade", str(subs), "--exercises", "ex99"]) == 2
    assert "no grader for ex99; the graders: ex01" in capsys.readouterr().err


def test_every_grader_names_its_parts():
    for grader in sorted((ROOT / "exercises").glob("test_ex*.py")):
        parts = [n for n, _ in grader_parts(grader)]
        assert parts == list(range(1, len(parts) + 1)) and parts, grader.name


@pytest.mark.slow
def test_the_student_copy_passes_its_own_test_command(student_copy):
    """The copy's README test command (its pytest part, run with this interpreter and the copy first on the path):
    every notebook runs in smoke mode up to its first blank, so files the notebooks read must be in the copy."""
    import os
    import subprocess
    import sys
    out = student_copy[0]
    readme = (out / "README.md").read_text()
    assert "BEGIN INSTRUCTORS ONLY" not in readme and "STUDENTS ONLY" not in readme and "{test-command}" not in readme
    assert "This copy has no solutions" in readme and "exercises/solutions/" not in readme
    command = readme.split("<!-- test-command -->", 1)[1].split("```bash\n", 1)[1].split("\n", 1)[0]
    assert command.endswith("-m pytest"), command
    assert (out / "benchmarks" / "results" / "codebook_sweep_emoji.csv").is_file()
    assert (out / "tests" / "fixtures" / "rar_tiny.pt").is_file() and not (out / "tests" / "fixtures" /
                                                                          "wrong_answers").exists()
    assert not (out / "exercises" / "_references.py").exists()
    assert (out / "exercises" / "expected" / "ex03.pt").is_file()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"], cwd=out,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(out), "PYTHONDONTWRITEBYTECODE": "1"})
    notebooks = len(list((out / "notebooks").glob("*.ipynb")))
    assert proc.returncode == 0 and f"{notebooks} passed" in proc.stdout, proc.stdout[-3000:]


def test_the_release_catches_short_answer_lines_and_answers_in_outputs_and_clears_outputs_on_request(tmp_path):
    root = tmp_path / "course"
    (root / "exercises" / "solutions").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "exercises" / "solutions" / "ex01_x.py").write_text(
        'def f(z, q):\n    """Doc."""\n    return z + (q - z).detach()\n')
    (root / "exercises" / "labs").mkdir()
    handout = root / "exercises" / "labs" / "01.md"
    handout.write_text("Hint: `return z + (q - z).detach()` is the whole trick.\n")  # 17 characters of code
    cell = {"cell_type": "code", "source": ["print(1)\n"], "execution_count": 1, "metadata": {},
            "outputs": [{"output_type": "stream", "name": "stdout", "text": ["z + (q - z).detach()\n"]}]}
    nb = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (root / "notebooks" / "03_n.ipynb").write_text(json.dumps(nb))
    with pytest.raises(ReleaseError, match=r"\(2 lines\).*01.md.*03_n.ipynb"):
        release(tmp_path / "out", root=root)
    handout.write_text("Hint: the straight-through estimator.\n")
    with pytest.raises(ReleaseError, match=r"03_n.ipynb"):
        release(tmp_path / "out", root=root)
    assert release(tmp_path / "out", root=root, clear_outputs=["03"])["cleared"] == 1
    assert json.loads((tmp_path / "out" / "notebooks" / "03_n.ipynb").read_text())["cells"][0]["outputs"] == []
    with pytest.raises(ReleaseError, match="no notebook 09"):
        release(tmp_path / "out2", root=root, clear_outputs=["09"])
