"""The instructor's side of the course: a student release without the solutions, and grading many submissions.

    python -m minivar course release --out student-copy    # what the students get (run it in a checkout)
    python -m minivar course grade submissions/            # one folder per student, each holding its exercises/

What the instructor's checkout keeps and the release leaves out:
- exercises/solutions/ (the reference answers), exercises/_references.py (the graders' own answers: the copy's
  graders read them recorded, from exercises/expected/), tests/ but for the official code's golden tensors
  (tests/fixtures/*.pt, which notebooks read), and CI files; benchmarks/ goes, since notebooks and sheets read its
  recorded results;
- in README.md, what lies between `<!-- BEGIN INSTRUCTORS ONLY -->` and `<!-- END INSTRUCTORS ONLY -->`; what lies
  in a `<!-- STUDENTS ONLY ... END STUDENTS ONLY -->` comment comes out of the comment (the students' test command
  among it); in pyproject.toml, nbmake's options, so `pytest` in the copy runs each notebook up to its first blank
  (conftest.py) and passes on a fresh copy;
- in notebooks, the code between `### BEGIN SOLUTION` and `### END SOLUTION` in a cell (nbgrader's convention):
  the release puts a `raise NotImplementedError` there and clears that cell's outputs;
- in Markdown files (lab handouts, ablation sheets, notebooks' text cells), everything between
  `<!-- BEGIN KEY -->` and `<!-- END KEY -->`: answer keys.
The release is then searched, notebook outputs included, for every line of those solutions and keys; one found stops
it with an error. `clear_outputs` leaves chosen notebooks' outputs out as well.

Grading reads the instructor's graders (exercises/test_exNN.py) once, hashed, into this process, reads each
student's exNN_*.py once, and runs the student's file in a sandbox (minivar/sandbox.py): a child process that cannot
import minivar nor reach the graders or solutions on a relative path, that answers with values only, within limits
of time (per part, and for the import), memory and output, and whose whole session (with anything it detached) is
killed when its exercise ends. The comparisons and the report stay here. A file that reaches outside its own
computation (system modules, exec, frames, assignments to torch) is flagged for a human. What a sandbox does not
stop: code that reads or writes files by an absolute path with your rights; grade in a container or a throwaway
account for that. Results: SUBMISSIONS/grades.csv (a row per student and part, with the failure message) and
SUBMISSIONS/grades.md (points in the lab handouts' rubric weights, the flags, then each failure).
"""

import ast
import csv
import hashlib
import importlib.util
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
import threading
from pathlib import Path

from .files import PathLock, write_bytes, write_text

ROOT = Path(__file__).resolve().parent.parent  # the checkout this package runs from
SOLUTION_BEGIN, SOLUTION_END = "### BEGIN SOLUTION", "### END SOLUTION"
KEY_BEGIN, KEY_END = "<!-- BEGIN KEY -->", "<!-- END KEY -->"
STUDENT_STUB = "raise NotImplementedError(\"your code here\")"
RELEASED = ("README.md", "pyproject.toml", "environment.yml", "conftest.py", "minivar", "notebooks", "exercises",
            "data", "benchmarks")  # benchmarks/: the recorded results the notebooks and sheets read
WITHHELD = ("exercises/solutions", "exercises/_references.py")
# README.md: what only the instructor reads goes; what only students read is kept in an HTML comment there
INSTRUCTORS_BEGIN, INSTRUCTORS_END = "<!-- BEGIN INSTRUCTORS ONLY -->", "<!-- END INSTRUCTORS ONLY -->"
STUDENTS_BEGIN, STUDENTS_END = "<!-- STUDENTS ONLY", "END STUDENTS ONLY -->"
# pyproject.toml: in the copy, notebooks run up to their first blank (conftest.py), not through nbmake
NBMAKE_OPTS = "--nbmake --nbmake-timeout=600 "
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
    keep = [f for f in listed if (f.split("/")[0] in RELEASED or is_golden(f)) and not f.startswith(WITHHELD)]
    return sorted(keep)


def student_readme(text: str, where="README.md") -> str:
    """The students' README: the instructors' blocks out, the students' blocks (kept in an HTML comment, where
    `{test-command}` stands for the test-command marker, which cannot nest in a comment) in."""
    text, _ = strip_blocks(text, INSTRUCTORS_BEGIN, INSTRUCTORS_END, where=where)
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.strip() == STUDENTS_BEGIN and not inside:
            inside = True
        elif line.strip() == STUDENTS_END and inside:
            inside = False
        else:
            out.append("<!-- test-command -->\n" if inside and line.strip() == "{test-command}" else line)
    if inside:
        raise ReleaseError(f"{where}: {STUDENTS_BEGIN!r} is never closed with {STUDENTS_END!r}")
    return "".join(out)


def is_golden(rel: str) -> bool:
    """The official code's golden tensors (tests/fixtures/*.pt and their README), which notebooks 03-07 compare the
    package with: data, released; the rest of tests/ (the wrong answers among it) is not."""
    return re.fullmatch(r"tests/fixtures/[\w.-]+\.pt|tests/fixtures/README\.md", rel) is not None


def release(out, root=None, force: bool = False, clear_outputs=()) -> dict:
    """Write the student copy of the course checkout `root` into `out` -> a summary (files, blanked cells...).

    clear_outputs: notebooks (their two-digit numbers, or "all") whose outputs the copy leaves out, for the labs
    whose handouts ask students to predict what those outputs show."""
    root, out = Path(root or ROOT), Path(out)
    clear_outputs = check_release(root, out, [str(c) for c in clear_outputs], force)
    secrets, prose, summary = [], [], {"files": 0, "blanked_cells": 0, "keys": 0}
    for rel in release_files(root):
        code, keys = release_file(root, out, rel, clear_outputs, summary)
        secrets, prose = secrets + code, prose + keys
        summary["files"] += 1
    secrets += [line for p in sorted((root / "exercises" / "solutions").glob("*.py"))
                for line in solution_lines(p.read_text())]
    leaked = find_leaks(out, secrets, prose)
    if leaked:
        shutil.rmtree(out)
        raise ReleaseError(f"the release would hold solution or key text ({len(leaked)} lines), so it was deleted: "
                           + "; ".join(f"{f}: {line!r}" for f, line in leaked[:8]))
    summary["blanked_cells"] = sum(
        1 for p in out.rglob("*.ipynb") for c in json.loads(p.read_text())["cells"]
        if STUDENT_STUB in "".join(c["source"]))
    return summary


def check_release(root: Path, out: Path, clear_outputs: list, force: bool) -> list:
    """Refuse a release that cannot be right, before anything is written (or, with force, deleted)."""
    bad = [c for c in clear_outputs if c != "all" and not re.fullmatch(r"\d\d", c)]
    if bad:
        raise ReleaseError(f"--clear-outputs takes notebook numbers (e.g. 03,05) or all, got {', '.join(bad)}")
    numbers = {p.name[:2] for p in (root / "notebooks").glob("*.ipynb")}
    unknown = [c for c in clear_outputs if c != "all" and c not in numbers]
    if unknown:
        raise ReleaseError(f"--clear-outputs: no notebook {', '.join(unknown)}; the notebooks: "
                           f"{', '.join(sorted(numbers))}")
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
    return clear_outputs


def release_file(root: Path, out: Path, rel: str, clear_outputs: list, summary: dict):
    """Copy one file into the student copy: notebooks blanked (and cleared if asked), the README and pyproject
    made the student's, answer keys and solution blocks taken out of .md and .py files -> (the code taken out,
    the key text taken out), which no file of the copy may then hold."""
    src, dst = root / rel, out / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    if rel.endswith(".ipynb"):
        nb, removed = blank_notebook(json.loads(src.read_text()), rel)
        if "all" in clear_outputs or Path(rel).name[:2] in clear_outputs:
            for cell in nb["cells"]:
                if cell["cell_type"] == "code":
                    cell["outputs"], cell["execution_count"] = [], None
            summary["cleared"] = summary.get("cleared", 0) + 1
        write_text(dst, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        return removed, []
    if rel == "README.md":
        write_text(dst, student_readme(src.read_text()))
    elif rel == "pyproject.toml":
        text = src.read_text()
        if NBMAKE_OPTS not in text:
            raise ReleaseError(f"pyproject.toml's addopts no longer hold {NBMAKE_OPTS.strip()!r}: update "
                               f"course.NBMAKE_OPTS, so the copy runs its notebooks up to their blanks")
        write_text(dst, text.replace(NBMAKE_OPTS, ""))
    elif rel.endswith((".md", ".py")):
        text, keys = strip_blocks(src.read_text(), KEY_BEGIN, KEY_END, where=rel)
        stub = solution_stub if rel.endswith(".py") else None
        text, code = strip_blocks(text, SOLUTION_BEGIN, SOLUTION_END, stub, where=rel)
        summary["keys"] += bool(keys)
        write_text(dst, text)
        return code, keys
    else:
        shutil.copy2(src, dst)
    return [], []


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


MIN_LEAK = 10  # characters of code (spaces, comments and a leading `return` taken out) that make a line an answer
MIN_PROSE = 30  # characters of an answer key's line that make it that key's, not a phrase any text may hold


def find_leaks(out: Path, secrets, prose=()) -> list:
    """(file, code) for every distinctive secret line found anywhere in a released file: a line of solution code,
    as `code_of` reduces it, of at least MIN_LEAK characters that compute something (`z+(z_q-z).detach()`, not
    `returnout`, not a loop header), or a line of an answer key of at least MIN_PROSE; looked for in every text file
    and in notebooks' cells and outputs."""
    headers = re.compile(r"\s*(for|if|elif|while|with|def|else|try|except)\b.*:\s*(#.*)?$")
    distinctive = {code_of(line) for line in secrets if not headers.match(line)}
    distinctive = {code for code in distinctive if len(code) >= MIN_LEAK and not re.fullmatch(r"[\w.,]+", code)}
    distinctive |= {code_of(line) for line in prose if len(code_of(line)) >= MIN_PROSE}
    leaks = []
    for p in sorted(out.rglob("*")):  # not minivar/: the package is the reference, released on purpose (graded
        # files run where it cannot be imported)
        if p.is_file() and p.suffix in (".py", ".md", ".ipynb", ".txt", ".toml", ".yml") and \
                p.relative_to(out).parts[0] != "minivar":
            text = p.read_text(errors="replace")
            if p.suffix == ".ipynb":  # the code as written (not its JSON escaping), and what the cells printed
                text = "\n".join(cell_text(c) for c in json.loads(text)["cells"])
            code = "\n".join(code_of(line) for line in text.splitlines())
            leaks += [(str(p.relative_to(out)), line) for line in sorted(distinctive) if line in code]
    return leaks


def cell_text(cell: dict) -> str:
    """A notebook cell's source and the text of its outputs (printed streams, text/plain and text/html data)."""
    parts = ["".join(cell.get("source", []))]
    for o in cell.get("outputs", []):
        parts.append("".join(o.get("text", [])))
        for kind in ("text/plain", "text/html", "text/markdown"):
            parts.append("".join(o.get("data", {}).get(kind, [])))
    return "\n".join(parts)


def code_of(line: str) -> str:
    """A line's code without its comment, spaces and a leading `return`: a copy with other comments or spacing, or
    inside a longer line (`y = ...` for `return ...`), still matches."""
    return re.sub(r"^return", "", re.sub(r"\s+", "", re.sub(r"(^|\s)#.*$", "", line)))


# ---------------------------------------------------------------- grading

def grader_parts(grader: Path) -> list:
    """[(part number, test function name)] of a grader file: its test_partN_... functions."""
    names = [n.name for n in ast.parse(grader.read_text()).body if isinstance(n, ast.FunctionDef)]
    return [(int(m.group(1)), name) for name in names if (m := re.match(r"test_part(\d+)_", name))]


class Graders:
    """The instructor's graders, read once: their text hashed, their test functions imported into this process from
    a private copy. A student's code never runs here (each runs in a minivar.sandbox child), so nothing it does
    can change these functions; `check()` puts back a grader file changed on disk all the same, and names it."""

    FILES = ("_grading.py", "_probes.py", "_references.py")  # beside the graders, where they exist
    MODULES = ("_grading", "_probes", "_references")

    def __init__(self, folder: Path, exercises: list):
        self.folder, self.exercises = folder, exercises
        names = [f"test_{e}.py" for e in exercises] + [f for f in self.FILES if (folder / f).exists()] + \
            [f"expected/{p.name}" for p in sorted((folder / "expected").glob("ex*.pt"))]  # recorded references
        self.texts = {n: (folder / n).read_bytes() for n in names}
        self.hashes = {n: hashlib.sha256(t).hexdigest() for n, t in self.texts.items()}
        self.copy, self.lock = Path(tempfile.mkdtemp(prefix="minivar-graders-")), threading.Lock()
        (self.copy / "expected").mkdir()
        for n, t in self.texts.items():
            (self.copy / n).write_bytes(t)
        self.tests, self.stubs = self._import(), {}
        for e in exercises:
            stub = next(iter(sorted(folder.glob(f"{e}_*.py"))), None)  # the released file's name, when there
            self.stubs[e] = stub.name if stub else None
        self.weights = rubric_weights(folder / "labs", {e: len(t) for e, t in self.tests.items()})

    def _import(self) -> dict:
        """{exercise: [(part, name, function)]}, imported from the private copy (its own _grading and _probes)."""
        saved = {m: sys.modules.pop(m) for m in self.MODULES if m in sys.modules}
        sys.path.insert(0, str(self.copy))
        try:
            tests = {}
            for e in self.exercises:
                spec = importlib.util.spec_from_file_location(f"minivar_grader_{e}", self.copy / f"test_{e}.py")
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                tests[e] = [(n, name, getattr(module, name)) for n, name in grader_parts(self.copy / f"test_{e}.py")]
        finally:
            sys.path.remove(str(self.copy))
            for m in self.MODULES:
                sys.modules.pop(m, None)
            sys.modules.update(saved)
        return tests

    def check(self) -> list:
        """The grader files that changed on disk since grading began (a submission wrote them), each put back as it
        was read: the grading itself runs on what was read, so a change cannot alter any grade."""
        changed = []
        with self.lock:
            for n, h in self.hashes.items():
                path = self.folder / n
                now = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
                if now != h:
                    changed.append(n)
                    write_bytes(path, self.texts[n])
        return changed

    def close(self):
        shutil.rmtree(self.copy, ignore_errors=True)


def rubric_weights(labs: Path, parts: dict) -> dict:
    """{exercise: points of one part} from the lab handouts' rubric rows, e.g. `| exercise 03, five parts ... |
    5 × 0.6 |` (0.6 a part) or `| exercise 01, graded automatically (all parts) | 3 |` (3 shared by the parts);
    1 a part where no handout says."""
    weights = {e: 1.0 for e in parts}
    for md in sorted(labs.glob("*.md")) if labs.is_dir() else []:
        for line in md.read_text().splitlines():
            m = re.match(r"\|\s*exercise (\d\d)\b[^|]*\|\s*([\d.]+)\s*(?:[×x*]\s*([\d.]+))?\s*\|", line)
            if m and f"ex{m.group(1)}" in parts:
                e = f"ex{m.group(1)}"
                weights[e] = float(m.group(3)) if m.group(3) else float(m.group(2)) / max(parts[e], 1)
    return weights


# what a file that reaches outside its own functions tends to use: flagged in grades.md for a human to read
SUSPECT_MODULES = {"importlib", "ctypes", "os", "subprocess", "sys", "atexit", "builtins", "signal", "socket",
                   "multiprocessing", "threading", "shutil", "inspect", "gc", "pickle", "marshal", "codecs", "runpy",
                   "pty", "resource", "pathlib", "io", "tempfile", "glob", "sysconfig", "site"}
SUSPECT_CALLS = {"exec", "eval", "compile", "__import__", "open", "globals", "vars", "setattr", "delattr",
                 "breakpoint", "input"}
SUSPECT_ATTRS = {"_getframe", "f_globals", "f_locals", "f_back", "__builtins__", "__subclasses__", "__globals__",
                 "__code__", "__dict__", "modules", "meta_path", "path_hooks"}


def suspicious(source: str) -> list:
    """["line N: what"] for every place a file reaches outside its own computation: imports of the modules above,
    exec/eval/__import__/open..., frame and module internals, and assignments to anything of torch."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    torch_names = {"torch"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            torch_names |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.split(".")[0] == "torch"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch":
            torch_names |= {a.asname or a.name for a in node.names}
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [(line, f"imports {a.name}") for a in node.names if a.name.split(".")[0] in SUSPECT_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in SUSPECT_MODULES:
            found.append((line, f"imports from {node.module}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in SUSPECT_CALLS:
            found.append((line, f"calls {node.func.id}()"))
        elif isinstance(node, ast.Attribute) and node.attr in SUSPECT_ATTRS:
            found.append((line, f"uses .{node.attr}"))
        elif isinstance(node, ast.Name) and node.id in ("__builtins__", "__loader__", "__spec__"):
            found.append((line, f"uses {node.id}"))
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for t in targets:
                base = t
                while isinstance(base, (ast.Attribute, ast.Subscript)):
                    base = base.value
                if t is not base and isinstance(base, ast.Name) and base.id in torch_names:
                    found.append((line, f"assigns to {ast.unparse(t)} (part of torch)"))
    return [f"line {n}: {what}" for n, what in sorted(set(found))]


def student_folder(submission: Path) -> Path:
    """Where a submission holds its exNN_*.py: its exercises/ folder, or the submission folder itself."""
    return submission / "exercises" if (submission / "exercises").is_dir() else submission


MAX_SOURCE = 1 << 20  # bytes: a larger "exercise file" is not one


def submitted_file(submission: Path, exercise: str, stub: str) -> dict:
    """The file graded for one exercise, read now (what the student's code later does to the folder changes
    nothing) -> {file, source, others} or {file, problem}. The released file's name wins over other candidates
    (ex02_codebook.py over ex02_codebook_final.py); links and files that lie outside the submission are refused."""
    folder = student_folder(submission)
    found = sorted(folder.glob(f"{exercise}_*.py"))
    if not found:
        where = folder.relative_to(submission.parent)
        return {"file": "", "problem": f"no {exercise}_*.py in {where}"}
    chosen = next((f for f in found if f.name == stub), found[0])
    others = [f.name for f in found if f != chosen]
    base = submission.resolve()
    if chosen.is_symlink() or base not in chosen.resolve().parents:
        return {"file": chosen.name, "others": others,
                "problem": f"{chosen.name} is a link to {os.path.realpath(chosen)}: hand in the file itself"}
    if chosen.stat().st_size > MAX_SOURCE:
        return {"file": chosen.name, "others": others,
                "problem": f"{chosen.name} is {chosen.stat().st_size >> 10} KB: an exercise file is a few KB of code"}
    try:
        source = chosen.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return {"file": chosen.name, "others": others, "problem": f"{chosen.name} is not UTF-8 text"}
    return {"file": chosen.name, "source": source, "others": others}


def check_source(name: str, source: str) -> str:
    """"" when the file can be imported at all, else why not (a syntax error with its line, a use of minivar)."""
    try:
        compile(source, name, "exec", dont_inherit=True)  # compiles, runs nothing
    except SyntaxError as e:
        return f"SyntaxError on line {e.lineno}: {e.msg}"
    except ValueError as e:  # null bytes
        return f"{name} cannot be read as Python: {e}"
    from .sandbox import uses_minivar
    line = uses_minivar(source)
    if line:
        return (f"{name} line {line} uses minivar, which holds the reference answers the graders compare with: "
                f"solve the exercise with torch alone")
    return ""


def part_outcome(test, ex) -> str:
    """Run one grader part against the student's sandbox -> "" if it passed, else the message a student reads."""
    from .sandbox import StudentError, StudentTimeout
    try:
        test(ex)
        return ""
    except NotImplementedError as e:
        return f"not done yet ({str(e) or 'NotImplementedError'})"
    except StudentTimeout as e:
        return first_line(e.message)
    except StudentError as e:
        return first_line(str(e))
    except AssertionError as e:
        return first_line(str(e) or "failed")
    except Exception as e:  # noqa: BLE001 - the grader tripped over what the student returned
        if type(e).__name__ == "Failed":  # pytest.fail()
            return first_line(getattr(e, "msg", str(e)))
        return first_line(f"{type(e).__name__}: {e}")
    except BaseException as e:  # pytest.fail raises an OutcomeException, not an Exception
        if type(e).__name__ in ("Failed", "OutcomeException"):
            return first_line(getattr(e, "msg", str(e)) or "failed")
        raise


def first_line(message: str) -> str:
    message = re.sub(r"^(AssertionError|Failed): ", "", message.strip())
    return message.splitlines()[0][:300] if message else "failed"


def grade_submission(student: str, files: dict, graders: Graders, limits) -> list:
    """Rows {student, exercise, part, name, points, weight, file, others, flags, message} of one submission, from
    its files as read when grading began ({exercise: submitted_file(...)})."""
    from .sandbox import Restarting
    rows = []
    for e in graders.exercises:
        got = files[e]
        problem = got.get("problem") or check_source(got["file"], got["source"])
        flags = suspicious(got.get("source", ""))
        probes = graders.copy / "_probes.py"
        ex = None if problem else Restarting(got["source"], got["file"], probes if probes.exists() else None, limits,
                                             reap=True)
        results = []
        for number, name, test in graders.tests[e]:
            message = problem
            if not message:
                try:
                    ex.get().time_limit(limits.call_timeout)
                    message = part_outcome(test, ex)
                except Exception as err:  # noqa: BLE001 - the file would not import: every part says why
                    message = problem = f"{got['file']} could not be imported: {first_line(str(err))}"
            results.append((number, name, message))
        if ex is not None:
            ex.close()
        flags += [f"{n} changed on disk while this file was graded (put back; with --jobs, maybe by a submission "
                  f"graded at the same time)" for n in graders.check()]
        rows += [{"student": student, "exercise": e, "part": number, "name": name, "points": int(message == ""),
                  "weight": graders.weights[e], "file": got["file"], "others": " ".join(got.get("others", [])),
                  "flags": "; ".join(flags), "message": message} for number, name, message in results]
    return rows


def grade(submissions, graders=None, exercises=None, timeout: float = 120.0, jobs: int = 1,
          import_timeout: float = 60.0, memory_gb: float = 8.0) -> list:
    """Grade every student folder in `submissions` -> rows; also writes grades.csv and grades.md there.

    Each student's file runs in a sandbox (minivar/sandbox.py) of its own; `timeout` bounds each part,
    `import_timeout` the import of the file, `memory_gb` its address space; `jobs` students are graded at once."""
    from .sandbox import Limits, enable_reaper
    submissions, graders = Path(submissions), Path(graders or ROOT / "exercises")
    known = sorted(p.stem.removeprefix("test_") for p in graders.glob("test_ex*.py"))
    if not known:
        raise FileNotFoundError(f"no graders (test_exNN.py) in {graders}: run this in the instructor's checkout")
    exercises = list(exercises or known)
    for name, value, what in (("--timeout", timeout, "each part's time limit in seconds, a number > 0 (default "
                                                      "120)"),
                              ("--import-timeout", import_timeout, "the time limit for importing a student's file, "
                                                                   "in seconds (default 60)"),
                              ("--memory", memory_gb, "a student process's memory limit in GB (default 8)")):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} is {what}, got {value!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, numbers.Integral) or not 1 <= jobs <= 64:
        raise ValueError(f"--jobs is how many students to grade at once, a whole number from 1 to 64, got {jobs!r}")
    unknown = [e for e in exercises if e not in known]
    if unknown:
        raise ValueError(f"no grader for {', '.join(unknown)}; the graders: {', '.join(known)}")
    if not submissions.is_dir():
        raise FileNotFoundError(f"{submissions} is not a folder: it should hold one folder per student")
    students = sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not students:
        raise ValueError(f"{submissions} holds no student folders (one folder per student, each with its "
                         f"exercises/)")
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm.auto import tqdm
    limits = Limits(import_timeout=import_timeout, call_timeout=timeout, memory_gb=memory_gb)
    enable_reaper()
    # one grading of a folder at a time: two would mix their tables
    with PathLock(submissions / "grades.csv", "grades", "wait for that grading to finish, or stop it"):
        g = Graders(graders, exercises)
        try:  # every file read before any student's code runs: none can change another's
            files = {s.name: {e: submitted_file(s, e, g.stubs[e]) for e in exercises} for s in students}
            rows = []
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(grade_submission, s.name, files[s.name], g, limits) for s in students]
                for f in tqdm(as_completed(futures), total=len(futures), desc="grading"):
                    rows += f.result()
        finally:
            g.close()
        write_tables(merge_grades(submissions / "grades.csv", rows), submissions)
    return rows


GRADE_FIELDS = ["student", "exercise", "part", "name", "points", "weight", "file", "others", "flags", "message"]
OLD_FIELDS = ["student", "exercise", "part", "name", "points", "message"]  # minivar's tables before the weights


def merge_grades(path: Path, rows: list) -> list:
    """The rows of an earlier grades.csv that this grading did not redo (other exercises, or students graded then
    but absent now), followed by this grading's rows: grading one exercise never drops the others' grades."""
    redone = {(r["student"], r["exercise"]) for r in rows}
    kept = []
    if path.exists():
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames not in (GRADE_FIELDS, OLD_FIELDS):
                raise ValueError(f"{path} is not a grades table of minivar (its columns: {reader.fieldnames}); move "
                                 f"it away and grade again")
            for r in reader:
                if (r["student"], r["exercise"]) not in redone:
                    kept.append({"file": "", "others": "", "flags": "", **r, "weight": r.get("weight") or 1.0,
                                 "points": int(r["points"])})
    merged = kept + rows
    order = {e: i for i, e in enumerate(sorted({r["exercise"] for r in merged}))}
    return sorted(merged, key=lambda r: (r["student"], order[r["exercise"]]))  # stable: parts keep their order


def write_tables(rows: list, out: Path, exercises: list = None):
    """grades.csv (a row per student, exercise and part) and grades.md (points in the rubric's weights, the files
    graded, what a human should read, what failed), atomically."""
    exercises = exercises or sorted({r["exercise"] for r in rows})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=GRADE_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "grades.csv", buf.getvalue())
    students = list(dict.fromkeys(r["student"] for r in rows))
    parts = {e: sorted({int(r["part"]) for r in rows if r["exercise"] == e}) for e in exercises}
    weight = {e: float(next(r.get("weight") or 1.0 for r in rows if r["exercise"] == e)) for e in exercises}
    best = {e: weight[e] * len(parts[e]) for e in exercises}
    num = lambda x: f"{x:g}"  # noqa: E731
    lines = ["# Grades", "", "Points in the lab handouts' rubric weights (an exercise's parts share its points; "
             "`graded by hand` items of the rubric are not here).", "",
             "| student | " + " | ".join(f"{e} ({len(parts[e])} parts, {num(best[e])} pts)" for e in exercises)
             + " | total |", "|---|" + "---|" * (len(exercises) + 1)]
    for s in students:
        mine = [r for r in rows if r["student"] == s]
        points = [sum(int(r["points"]) * weight[e] for r in mine if r["exercise"] == e) for e in exercises]
        lines.append(f"| {s} | " + " | ".join(num(round(p, 4)) for p in points)
                     + f" | {num(round(sum(points), 4))} / {num(sum(best.values()))} |")
    firsts = list({(r["student"], r["exercise"]): r for r in rows}.values())
    graded = [r for r in firsts if r.get("others")]
    if graded:
        lines += ["", "## Files graded where a submission held several", ""]
        lines += [f"- **{r['student']}**, {r['exercise']}: graded `{r['file']}`; not graded: "
                  + ", ".join(f"`{o}`" for o in r["others"].split()) for r in graded]
    flagged = [r for r in firsts if r.get("flags")]
    if flagged:
        lines += ["", "## For a human to read", "",
                  "These files reach outside their own computation (imports of the system, `exec`, frames, "
                  "assignments to torch). Their code ran in a sandbox and their points stand as the graders gave "
                  "them; read each to see why it does what it does.", ""]
        lines += [f"- **{r['student']}**, `{r['file']}`: {r['flags'].replace('|', '/')}" for r in flagged]
    failures = [r for r in rows if not int(r["points"])]
    if failures:
        lines += ["", "## What failed", ""]
        lines += [f"- **{r['student']}**, {r['exercise']} part {r['part']} (`{r['name']}`): "
                  f"{r['message'].replace('|', '/')}" for r in failures]
    write_text(out / "grades.md", "\n".join(lines) + "\n")


__all__ = ["release", "grade", "strip_blocks", "blank_notebook", "grader_parts", "suspicious", "rubric_weights",
           "ReleaseError"]
