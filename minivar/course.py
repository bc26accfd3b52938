"""The instructor's side of the course: a student release without the solutions, and grading many submissions.

    python -m minivar course release --out student-copy    # what the students get (run it in a checkout)
    python -m minivar course grade submissions/            # one folder per student, each holding its exercises/

What the instructor's checkout keeps and the release leaves out:
- exercises/solutions/ (the reference answers), tests/, benchmarks/ and CI files;
- in notebooks, the code between `### BEGIN SOLUTION` and `### END SOLUTION` in a cell (nbgrader's convention):
  the release puts a `raise NotImplementedError` there and clears that cell's outputs;
- in Markdown files (lab handouts, ablation sheets, notebooks' text cells), everything between
  `<!-- BEGIN KEY -->` and `<!-- END KEY -->`: answer keys.
The release is then searched for every line of those solutions and keys; one found stops it with an error.

Grading runs the instructor's graders (exercises/test_exNN.py) on each student's exNN_*.py in a subprocess of its
own with a time limit, never in this process: a student's endless loop costs one timeout, not the grading. (The
subprocess is not a sandbox: it runs the students' code with your rights. Grade in a container or a throwaway
account when that matters.) Results: SUBMISSIONS/grades.csv (a row per student and part, with the failure message)
and SUBMISSIONS/grades.md (a table of points per student and exercise, then each failure).
"""

import ast
import csv
import io
import json
import math
import numbers
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from .files import PathLock, write_text

ROOT = Path(__file__).resolve().parent.parent  # the checkout this package runs from
SOLUTION_BEGIN, SOLUTION_END = "### BEGIN SOLUTION", "### END SOLUTION"
KEY_BEGIN, KEY_END = "<!-- BEGIN KEY -->", "<!-- END KEY -->"
STUDENT_STUB = "raise NotImplementedError(\"your code here\")"
RELEASED = ("README.md", "pyproject.toml", "environment.yml", "conftest.py", "minivar", "notebooks", "exercises",
            "data")
WITHHELD = ("exercises/solutions",)
GRADER_FILES = ("_grading.py", "conftest.py")


class ReleaseError(RuntimeError):
    pass


# ---------------------------------------------------------------- the student release

def solution_stub(indent: str) -> str:
    """What stands where a solution block was."""
    return f"{indent}# YOUR CODE HERE\n{indent}{STUDENT_STUB}\n"


def strip_blocks(text: str, begin: str, end: str, replacement=None, where="") -> tuple:
    """Remove every begin...end block (markers included) from text -> (new text, the removed lines).
    replacement(indent) gives what stands in for a block (nothing by default); an unclosed block is an error."""
    out, removed, inside, indent = [], [], False, ""
    for line in text.splitlines(keepends=True):
        if line.strip().startswith(begin) and not inside:
            inside, indent = True, line[:len(line) - len(line.lstrip())]
            continue
        if line.strip().startswith(end) and inside:
            inside = False
            if replacement:
                out.append(replacement(indent))
            continue
        (removed if inside else out).append(line)
    if inside:
        raise ReleaseError(f"{where}: a block opened with {begin!r} is never closed with {end!r}")
    return "".join(out), removed


def blank_notebook(nb: dict, where: str) -> tuple:
    """A notebook with its solution code blanked and its answer keys removed -> (notebook, removed lines)."""
    removed = []
    for cell in nb["cells"]:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code" and SOLUTION_BEGIN in source:
            source, lines = strip_blocks(source, SOLUTION_BEGIN, SOLUTION_END, solution_stub, where)
            cell["outputs"], cell["execution_count"] = [], None  # outputs would show the answer
            removed += lines
        elif cell["cell_type"] == "markdown" and KEY_BEGIN in source:
            source, lines = strip_blocks(source, KEY_BEGIN, KEY_END, where=where)
            removed += lines
        cell["source"] = source.splitlines(keepends=True)
    return nb, removed


def release_files(root: Path) -> list:
    """The files of the checkout that go to students: what git does not ignore, in a git checkout (no runs,
    caches or downloads), else a walk that skips what .gitignore names."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root,
                                capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        skip = {"runs", "__pycache__", ".venv", ".ipynb_checkpoints", ".pytest_cache", ".ruff_cache", ".git"}
        listed = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                  and not skip & set(p.relative_to(root).parts) and not p.name.endswith(".egg-info")]
    keep = [f for f in listed if f.split("/")[0] in RELEASED and not f.startswith(WITHHELD)]
    return sorted(keep)


def release(out, root=None, force: bool = False) -> dict:
    """Write the student copy of the course checkout `root` into `out` -> a summary (files, blanked cells...)."""
    root, out = Path(root or ROOT), Path(out)
    if not (root / "exercises" / "solutions").is_dir() or not (root / "notebooks").is_dir():
        raise ReleaseError(f"{root} is not an instructor's checkout of minivar (no exercises/solutions/ or "
                           f"notebooks/): run this from a git clone of the course, not from an installed package")
    here, there = root.resolve(), out.resolve()  # checked before --force may delete anything
    if there == here or there in here.parents or here in there.parents and \
            there.relative_to(here).parts[0] in RELEASED:
        raise ReleaseError(f"{out} holds or lies inside the files being released; choose a folder outside them")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ReleaseError(f"{out} is not empty: choose a new folder, or pass --force to replace it")
        shutil.rmtree(out)
    secrets, summary = [], {"files": 0, "blanked_cells": 0, "keys": 0}
    for rel in release_files(root):
        src, dst = root / rel, out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".ipynb"):
            nb, removed = blank_notebook(json.loads(src.read_text()), rel)
            write_text(dst, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            secrets += removed
        elif rel.endswith((".md", ".py")):
            text = src.read_text()
            text, keys = strip_blocks(text, KEY_BEGIN, KEY_END, where=rel)
            stub = solution_stub if rel.endswith(".py") else None
            text, code = strip_blocks(text, SOLUTION_BEGIN, SOLUTION_END, stub, where=rel)
            summary["keys"] += bool(keys)
            secrets += keys + code
            write_text(dst, text)
        else:
            shutil.copy2(src, dst)
        summary["files"] += 1
    secrets += [line for p in sorted((root / "exercises" / "solutions").glob("*.py"))
                for line in solution_lines(p.read_text())]
    leaked = find_leaks(out, secrets)
    if leaked:
        shutil.rmtree(out)
        raise ReleaseError(f"the release would hold solution or key text ({len(leaked)} lines), so it was deleted: "
                           + "; ".join(f"{f}: {line!r}" for f, line in leaked[:8]))
    summary["blanked_cells"] = sum(
        1 for p in out.rglob("*.ipynb") for c in json.loads(p.read_text())["cells"]
        if STUDENT_STUB in "".join(c["source"]))
    return summary


def solution_lines(source: str) -> list:
    """The lines of the function bodies of a solution file (its answers; the signatures and docstrings are the
    students' too)."""
    lines = source.splitlines()
    body = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            statements = node.body[1:] if ast.get_docstring(node) else node.body
            for st in statements:
                body += lines[st.lineno - 1:st.end_lineno]
    return body


def find_leaks(out: Path, secrets) -> list:
    """(file, code) for every distinctive secret line (20+ characters of code) found anywhere in a released file."""
    # long, and computing something: not `return a, b`, not a loop or branch header (`for k, s in enumerate(x):`)
    headers = re.compile(r"\s*(for|if|elif|while|with|def|else|try|except)\b.*:\s*(#.*)?$")
    distinctive = {code_of(line) for line in secrets if not headers.match(line)}
    distinctive = {code for code in distinctive if len(code) >= 20 and not re.fullmatch(r"[\w.,]+", code)}
    leaks = []
    for p in sorted(out.rglob("*")):  # not minivar/: the package is the reference, released on purpose (the graders
        # refuse a student file that uses it)
        if p.is_file() and p.suffix in (".py", ".md", ".ipynb", ".txt", ".toml", ".yml") and \
                p.relative_to(out).parts[0] != "minivar":
            text = p.read_text(errors="replace")
            if p.suffix == ".ipynb":  # compare the code as written, not its JSON escaping
                text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"])
            code = "\n".join(code_of(line) for line in text.splitlines())
            leaks += [(str(p.relative_to(out)), line) for line in sorted(distinctive) if line in code]
    return leaks


def code_of(line: str) -> str:
    """A line's code without its comment, spaces and a leading `return`: a copy with other comments or spacing, or
    inside a longer line (`y = ...` for `return ...`), still matches."""
    return re.sub(r"^return", "", re.sub(r"\s+", "", re.sub(r"(^|\s)#.*$", "", line)))


# ---------------------------------------------------------------- grading

def grader_parts(grader: Path) -> list:
    """[(part number, test function name)] of a grader file: its test_partN_... functions."""
    names = [n.name for n in ast.parse(grader.read_text()).body if isinstance(n, ast.FunctionDef)]
    return [(int(m.group(1)), name) for name in names if (m := re.match(r"test_part(\d+)_", name))]


def student_folder(submission: Path) -> Path:
    """Where a submission holds its exNN_*.py: its exercises/ folder, or the submission folder itself."""
    return submission / "exercises" if (submission / "exercises").is_dir() else submission


def run_grader(exercise: str, student_file: Path, graders: Path, timeout: float, select=None) -> dict:
    """Run one exercise's grader on one student file, in a fresh folder and its own process, within `timeout`
    seconds -> {test name: failure message, or "" when it passed}. Raises TimeoutError."""
    with tempfile.TemporaryDirectory(prefix=f"grade-{exercise}-") as tmp:
        tmp = Path(tmp)
        for name in GRADER_FILES + (f"test_{exercise}.py",):
            shutil.copy(graders / name, tmp / name)
        stub = next(graders.glob(f"{exercise}_*.py"), student_file)  # the name the grader loads
        shutil.copy(student_file, tmp / stub.name)
        report = tmp / "report.xml"
        cmd = [sys.executable, "-m", "pytest", f"test_{exercise}.py", "-m", exercise, "-p", "no:cacheprovider",
               "-q", "--no-header", f"--junitxml={report}", "-o", "addopts=", "--rootdir", str(tmp)]
        if select:
            cmd += ["-k", select]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "MINIVAR_SMOKE": "1"}
        proc = subprocess.Popen(cmd, cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            output = proc.communicate(timeout=timeout)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise TimeoutError(f"still running after {timeout:g} s (an endless loop?)") from None
        if not report.exists():
            tail = output.strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"the grader could not run: {tail[0][:200]}")
        return junit_results(report)


def kill_group(proc):
    import signal
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):  # gone already; or Windows
        proc.kill()
    proc.communicate()


def junit_results(report: Path) -> dict:
    """{test function name: "" if it passed, else the first line of its failure or error message}."""
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("name", "").split("[")[0]
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if case.find("skipped") is not None and problem is None:
            continue
        message = "" if problem is None else first_line(problem.get("message") or problem.text or "failed")
        results[name] = message
    return results


def first_line(message: str) -> str:
    message = re.sub(r"^(AssertionError|Failed): ", "", message.strip())
    return message.splitlines()[0][:300] if message else "failed"


def grade_submission(submission: Path, graders: Path, exercises: list, timeout: float) -> list:
    """Rows {student, exercise, part, name, points, message} of one submission."""
    rows, folder = [], student_folder(submission)
    for ex in exercises:
        parts = grader_parts(graders / f"test_{ex}.py")
        files = sorted(folder.glob(f"{ex}_*.py"))
        results, missing = {}, None
        if not files:
            missing = f"no {ex}_*.py in {folder.relative_to(submission.parent)}"
        else:
            try:
                results = run_grader(ex, files[0], graders, timeout)
            except TimeoutError:  # then part by part, so one endless part does not cost the others
                for _, name in parts:
                    try:
                        results.update(run_grader(ex, files[0], graders, timeout, select=name))
                    except (TimeoutError, RuntimeError) as e:
                        results[name] = str(e)
            except RuntimeError as e:
                missing = str(e)
        for number, name in parts:
            message = missing or results.get(name, "not run (the grader stopped before it)")
            rows.append({"student": submission.name, "exercise": ex, "part": number, "name": name,
                         "points": int(message == ""), "message": message})
    return rows


def grade(submissions, graders=None, exercises=None, timeout: float = 120.0) -> list:
    """Grade every student folder in `submissions` -> rows; also writes grades.csv and grades.md there."""
    submissions, graders = Path(submissions), Path(graders or ROOT / "exercises")
    known = sorted(p.stem.removeprefix("test_") for p in graders.glob("test_ex*.py"))
    if not known:
        raise FileNotFoundError(f"no graders (test_exNN.py) in {graders}: run this in the instructor's checkout")
    exercises = list(exercises or known)
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not math.isfinite(timeout) \
            or timeout <= 0:
        raise ValueError(f"--timeout is each grader's time limit in seconds, a number > 0 (default 120), got "
                         f"{timeout!r}")
    unknown = [e for e in exercises if e not in known]
    if unknown:
        raise ValueError(f"no grader for {', '.join(unknown)}; the graders: {', '.join(known)}")
    if not submissions.is_dir():
        raise FileNotFoundError(f"{submissions} is not a folder: it should hold one folder per student")
    students = sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not students:
        raise ValueError(f"{submissions} holds no student folders (one folder per student, each with its "
                         f"exercises/)")
    from tqdm.auto import tqdm
    # one grading of a folder at a time: two would mix their tables
    with PathLock(submissions / "grades.csv", "grades", "wait for that grading to finish, or stop it"):
        rows = []
        for student in tqdm(students, desc="grading"):
            rows += grade_submission(student, graders, exercises, timeout)
        write_tables(merge_grades(submissions / "grades.csv", rows), submissions)
    return rows


GRADE_FIELDS = ["student", "exercise", "part", "name", "points", "message"]


def merge_grades(path: Path, rows: list) -> list:
    """The rows of an earlier grades.csv that this grading did not redo (other exercises, or students graded then
    but absent now), followed by this grading's rows: grading one exercise never drops the others' grades."""
    redone = {(r["student"], r["exercise"]) for r in rows}
    kept = []
    if path.exists():
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames != GRADE_FIELDS:
                raise ValueError(f"{path} is not a grades table of minivar (its columns: {reader.fieldnames}); move "
                                 f"it away and grade again")
            for r in reader:
                if (r["student"], r["exercise"]) not in redone:
                    kept.append({**r, "points": int(r["points"])})
    merged = kept + rows
    order = {e: i for i, e in enumerate(sorted({r["exercise"] for r in merged}))}
    return sorted(merged, key=lambda r: (r["student"], order[r["exercise"]]))  # stable: parts keep their order


def write_tables(rows: list, out: Path, exercises: list = None):
    """grades.csv (a row per student, exercise and part) and grades.md (a table and what failed), atomically."""
    exercises = exercises or sorted({r["exercise"] for r in rows})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=GRADE_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "grades.csv", buf.getvalue())
    students = list(dict.fromkeys(r["student"] for r in rows))
    total = {e: len({r["part"] for r in rows if r["exercise"] == e}) for e in exercises}
    lines = ["# Grades", "", "| student | " + " | ".join(f"{e} ({total[e]})" for e in exercises) + " | total |",
             "|---|" + "---|" * (len(exercises) + 1)]
    for s in students:
        mine = [r for r in rows if r["student"] == s]
        points = [sum(r["points"] for r in mine if r["exercise"] == e) for e in exercises]
        lines.append(f"| {s} | " + " | ".join(map(str, points)) + f" | {sum(points)} / {sum(total.values())} |")
    failures = [r for r in rows if not r["points"]]
    if failures:
        lines += ["", "## What failed", ""]
        lines += [f"- **{r['student']}**, {r['exercise']} part {r['part']} (`{r['name']}`): "
                  f"{r['message'].replace('|', '/')}" for r in failures]
    write_text(out / "grades.md", "\n".join(lines) + "\n")


__all__ = ["release", "grade", "strip_blocks", "blank_notebook", "grader_parts", "run_grader", "ReleaseError"]
