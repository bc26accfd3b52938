"""Shared by the graders: run the student's file (or its solution) apart, and parametrize a check over both.

`pytest -m exNN` grades the student's file only; the full test run (`pytest`) grades the solutions, and
tests/test_exercises.py checks that the untouched student stubs fail every grader.

The file under test never runs in the grader's process: `ex` is a minivar.sandbox.Sandbox, a child process that
imported the file where minivar, the graders and the solutions cannot be reached. `ex.fn(...)` calls the file's
function there and brings back its values; `ex.gradients(...)` the gradients at its inputs; `ex.probe(...)` a toy
model from _probes.py for the function to call. References and comparisons stay here.
"""

from pathlib import Path

import pytest

from minivar.sandbox import Limits, Restarting, StudentError, uses_minivar

HERE = Path(__file__).resolve().parent
PROBES = HERE / "_probes.py"


def load(name: str, who: str):
    """The exercise file `name` of the student (exercises/NAME.py) or its solution, imported in a sandbox."""
    path = HERE / ("solutions" if who == "solution" else "") / f"{name}.py"
    source = path.read_text()
    if who == "student":
        line = uses_minivar(source)
        if line:
            pytest.fail(f"{path.name} line {line} uses minivar, which holds the reference answers the graders compare "
                        f"with: solve the exercise with torch alone", pytrace=False)
    ex = Restarting(source, path.name, PROBES, Limits(call_timeout=300))
    try:
        ex.get()
    except StudentError as e:
        pytest.fail(f"{path.name} could not be imported: {e}", pytrace=False)
    return ex


def exercise(name: str, who: str):
    """The body of a grader's `ex` fixture: the file in its sandbox, closed after the grader's module."""
    ex = load(name, who)
    yield ex
    ex.close()


def implementations(marker: str):
    """Fixture params: the student's file (marked `marker` and `student`) and the solution (where the solutions
    are: the student release has none)."""
    params = [pytest.param("student", marks=[getattr(pytest.mark, marker), pytest.mark.student], id="student")]
    if (HERE / "solutions").is_dir():
        params.append(pytest.param("solution", marks=pytest.mark.solution, id="solution"))
    return params
