"""Grading a student cannot fool: a class of dishonest submissions (tests/fixtures/cheaters/) scores nothing, the
graders and the other students' files stay as they were, nothing a student started outlives the grading, and the
sandbox itself keeps the student's code from the reference answers while giving the grader honest values."""

import csv
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from minivar.course import grade, grader_parts, rubric_weights, suspicious
from minivar.sandbox import Sandbox, StudentCrashed, StudentError, StudentTimeout

ROOT = Path(__file__).resolve().parents[1]
CHEATS = ROOT / "tests" / "fixtures" / "cheaters"
SOLUTION = ROOT / "exercises" / "solutions" / "ex07_randomized_ar.py"


def still_running(text: str) -> list:
    """Processes of this user whose command line holds `text`."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and entry.isdigit() and int(entry) != os.getpid():
            found.append(cmd)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="the orphan check reads /proc (Linux)")
@pytest.mark.slow
def test_a_class_of_dishonest_submissions_scores_nothing_and_changes_nothing(tmp_path):
    graders = tmp_path / "graders"  # the instructor's graders, copied so the test may let a cheat attack them
    shutil.copytree(ROOT / "exercises", graders, ignore=shutil.ignore_patterns("solutions", "__pycache__"))
    before = (graders / "test_ex07.py").read_bytes()
    subs, mark = tmp_path / "submissions", tmp_path / "mark.txt"
    victim = subs / "zoe" / "exercises" / "ex07_randomized_ar.py"

    def hand_in(student, text):
        (subs / student / "exercises").mkdir(parents=True)
        (subs / student / "exercises" / "ex07_randomized_ar.py").write_text(text)

    cheats = sorted(p.stem for p in CHEATS.glob("*.py"))
    for cheat in cheats:
        text = (CHEATS / f"{cheat}.py").read_text()
        hand_in(cheat, text.replace("{MARK!r}", repr(str(mark))).replace("{MARK}", str(mark))
                .replace("{GRADERS}", str(graders)).replace("{VICTIM}", str(victim)))
    (subs / "symlink" / "exercises").mkdir(parents=True)
    (subs / "symlink" / "exercises" / "ex07_randomized_ar.py").symlink_to(SOLUTION)
    hand_in("alice", SOLUTION.read_text())
    hand_in("zoe", SOLUTION.read_text())  # the other student whose file a cheat overwrites
    hand_in("zz_stubs", (ROOT / "exercises" / "ex07_randomized_ar.py").read_text())  # graded after the cheats

    rows = grade(subs, graders=graders, exercises=["ex07"], timeout=15, jobs=2)
    time.sleep(5)  # longer than the detached processes wait before they write

    points = {}
    for r in rows:
        points.setdefault(r["student"], []).append(r["points"])
    assert points.pop("alice") == [1, 1, 1, 1] and points.pop("zoe") == [1, 1, 1, 1], rows
    assert set(points) == set(cheats) | {"symlink", "zz_stubs"}
    assert all(p == [0, 0, 0, 0] for p in points.values()), {s: p for s, p in points.items() if any(p)}
    assert (graders / "test_ex07.py").read_bytes() == before  # put back
    assert not mark.exists(), mark.read_text()
    assert not still_running("outlived the grading")
    messages = {r["student"]: r["message"] for r in rows if r["part"] == 1}
    assert "ModuleNotFoundError" in messages["importlib_concat"] and "minivar" in messages["importlib_concat"]
    assert "a link to" in messages["symlink"] and "hand in the file itself" in messages["symlink"]
    flags = {r["student"]: r["flags"] for r in rows}
    for cheat, what in [("importlib_concat", "imports importlib"), ("exec_rot13", "calls exec()"),
                        ("allclose_always_true", "assigns to torch.allclose"), ("caller_frame", "uses ._getframe"),
                        ("atexit_forge_report", "imports atexit"), ("detached_process", "imports subprocess"),
                        ("dunder_import_base64", "calls __import__()"), ("exec_solution_file", "calls exec()")]:
        assert what in flags[cheat], (cheat, flags[cheat])
    assert any("test_ex07.py changed on disk" in f for f in flags.values())
    assert not flags["alice"]
    table = (subs / "grades.md").read_text()
    assert "## For a human to read" in table and "| alice | 3 | 3 / " in table


def test_the_sandbox_returns_values_gradients_and_in_place_changes_and_hides_minivar():
    source = ("import torch\n"
              "def double(x):\n    return x * 2, {'n': int(x.numel())}, [x.sum()]\n"
              "def scale_(x):\n    x.mul_(3)\n    return None\n"
              "def square_sum(x):\n    return (x ** 2).sum()\n"
              "def odd():\n    return object()\n"
              "def broken():\n    return 1 / 0\n"
              "def find_minivar():\n    import importlib\n    return importlib.util.find_spec('minivar') is None\n")
    x = torch.arange(4.0)
    with Sandbox(source, "ex99_demo.py") as ex:
        doubled, info, sums = ex.double(x)
        assert torch.equal(doubled, x * 2) and info == {"n": 4} and float(sums[0]) == 6.0
        y = x.clone()
        assert ex.scale_(y) is None and torch.equal(y, x * 3)  # the change made in the child, made here too
        (g,) = ex.gradients("square_sum", (x,))
        assert torch.equal(g, 2 * x)
        assert type(ex.odd()).__name__ == "Unsupported"
        with pytest.raises(StudentError, match="ZeroDivisionError on line 12"):
            ex.broken()
        assert ex.find_minivar() is True  # minivar cannot be found from the child at all


def test_the_sandbox_reports_bad_files_and_stops_endless_or_dying_code():
    with pytest.raises(StudentError, match="SyntaxError on line 2"):
        Sandbox("x = 1\ndef f(:\n", "ex99_bad.py").start()
    with pytest.raises(StudentError, match="ModuleNotFoundError on line 1.*minivar"):
        Sandbox("import minivar.vq\n", "ex99_cheat.py").start()
    ex = Sandbox("import os\ndef spin():\n    while True:\n        pass\ndef die():\n    os._exit(3)\n"
                 "def ok():\n    return 1\n", "ex99_bad.py").start()
    try:
        ex.time_limit(2)
        with pytest.raises(StudentTimeout, match=r"spin\(\) was still running after 2 s"):
            ex.spin()
        with pytest.raises(StudentCrashed):  # a stopped child answers nothing more
            ex.ok()
    finally:
        ex.close()
    with Sandbox("import os\ndef die():\n    os._exit(3)\n", "ex99_die.py") as ex:
        with pytest.raises(StudentCrashed, match="exit code 3"):
            ex.die()


def test_flags_and_rubric_weights():
    source = ("import os, torch\nimport torch.nn.functional as F\nfrom torch import allclose\n"
              "torch.allclose = None\nF.mse_loss = None\nx = eval('1')\ny = sys._getframe\n")
    found = suspicious(source)
    assert found == ["line 1: imports os", "line 4: assigns to torch.allclose (part of torch)",
                     "line 5: assigns to F.mse_loss (part of torch)", "line 6: calls eval()", "line 7: uses ._getframe"]
    assert suspicious("import torch\n\ndef f(x):\n    return torch.relu(x)\n") == []
    weights = rubric_weights(ROOT / "exercises" / "labs", {"ex01": 3, "ex03": 5, "ex07": 4, "ex99": 2})
    assert weights == {"ex01": 1.0, "ex03": 0.6, "ex07": 0.75, "ex99": 1.0}


def test_grading_reads_the_released_name_first_and_says_which_file_it_graded(tmp_path):
    subs = tmp_path / "subs"
    (subs / "ann" / "exercises").mkdir(parents=True)
    (subs / "ann" / "exercises" / "ex07_randomized_ar.py").write_text(SOLUTION.read_text())
    (subs / "ann" / "exercises" / "ex07_randomized_ar_final.py").write_text("this is not python\n")
    (subs / "ben" / "exercises").mkdir(parents=True)
    (subs / "ben" / "exercises" / "ex07_randomized_ar.py").write_text("def f(:\n    pass\n")
    rows = grade(subs, exercises=["ex07"], timeout=30)
    got = {(r["student"], r["part"]): r for r in rows}
    assert got["ann", 1]["points"] == 1 and got["ann", 1]["file"] == "ex07_randomized_ar.py"
    assert got["ben", 1]["message"] == "SyntaxError on line 1: invalid syntax"
    table = (subs / "grades.md").read_text()
    assert "graded `ex07_randomized_ar.py`; not graded: `ex07_randomized_ar_final.py`" in table
    header = next(csv.reader(open(subs / "grades.csv")))
    assert header[:5] == ["student", "exercise", "part", "name", "points"] and "weight" in header


WRONG = ROOT / "tests" / "fixtures" / "wrong_answers"


@pytest.mark.slow
def test_every_grader_fails_every_recorded_wrong_answer(tmp_path):
    """tests/fixtures/wrong_answers/exNN_partK_*.py: a solution with one plausible mistake; part K must fail."""
    stubs = {p.name.split("_")[0]: p.name for p in (ROOT / "exercises").glob("ex*_*.py")}
    subs, wanted = tmp_path / "subs", {}
    for p in sorted(WRONG.glob("ex*_part*_*.py")):
        ex, part = p.name.split("_")[:2]
        (subs / p.stem / "exercises").mkdir(parents=True)
        shutil.copy(p, subs / p.stem / "exercises" / stubs[ex])
        wanted[p.stem] = (ex, int(part.removeprefix("part")))
    assert len(wanted) >= 40 and {e for e, _ in wanted.values()} == set(stubs)
    assert {(e, k) for e, k in wanted.values()} >= {(e, k) for e in stubs
                                                    for k, _ in grader_parts(ROOT / "exercises" / f"test_{e}.py")}
    rows = grade(subs, exercises=sorted(stubs), timeout=60, jobs=2)
    passed = {(r["student"], r["exercise"], r["part"]) for r in rows if r["points"]}
    caught = {s: (s, e, k) not in passed for s, (e, k) in wanted.items()}
    assert all(caught.values()), [s for s, ok in caught.items() if not ok]
