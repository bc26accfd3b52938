"""Shared by the graders: run the student's file (or its solution) apart, and parametrize a check over both.

`pytest -m exNN` grades the student's file only; the full test run (`pytest`) grades the solutions, and
tests/test_exercises.py checks that the untouched student stubs fail every grader.

The file under test never runs in the grader's process: `ex` is a minivar.sandbox.Sandbox, a child process that
imported the file where minivar, the graders and the solutions cannot be reached. `ex.fn(...)` calls the file's
function there and brings back its values; `ex.gradients(...)` the gradients at its inputs; `ex.probe(...)` a toy
model from _probes.py for the function to call. References and comparisons stay here.
"""

import io
import os
from pathlib import Path

import pytest
import torch

from minivar.sandbox import Limits, Restarting, StudentError, uses_minivar

HERE = Path(__file__).resolve().parent
PROBES = HERE / "_probes.py"
EXPECTED = HERE / "expected"
try:
    import _references  # the instructor's answers for the graders: not in the student copy
except ImportError:
    _references = None
_RECORDS = {}


def expected(exercise: str, case: str, name: str, *args):
    """A grader's reference value for one case: `_references.NAME(*args)` in the instructor's checkout (checked
    against the record, or recorded with MINIVAR_RECORD=1), else the value recorded in expected/EXERCISE.pt."""
    path = EXPECTED / f"{exercise}.pt"
    if exercise not in _RECORDS:
        _RECORDS[exercise] = torch.load(path, weights_only=True) if path.exists() else {}
    record = _RECORDS[exercise]
    if _references is None:
        if case not in record:
            raise RuntimeError(f"{path.name} holds no reference for {case!r}: this copy's graders and records differ "
                               f"(ask for a new copy)")
        return record[case]
    value = getattr(_references, name)(*args)
    if os.environ.get("MINIVAR_RECORD") == "1":
        record[case] = value
        EXPECTED.mkdir(exist_ok=True)
        buf = io.BytesIO()
        torch.save(record, buf)
        path.write_bytes(buf.getvalue())
    elif case not in record or not same(record[case], value):
        raise RuntimeError(f"{path} {'lacks' if case not in record else 'disagrees with'} the reference for "
                           f"{case!r}: record again (MINIVAR_RECORD=1 python -m pytest exercises -m solution)")
    return value


def same(a, b) -> bool:
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and \
            (torch.equal(a, b) if not a.is_floating_point() else torch.allclose(a, b, rtol=1e-6, atol=1e-7))
    return a == b


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
