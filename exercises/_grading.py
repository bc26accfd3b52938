"""Shared by the graders: load the student's file or its solution, and parametrize a check over both.

`pytest -m exNN` grades the student's file only; the full test run (`pytest`) grades the solutions, and
tests/test_exercises.py checks that the untouched student stubs fail every grader.
"""

import importlib.util
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def load(name: str, who: str):
    path = HERE / ("solutions" if who == "solution" else "") / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{who}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def implementations(marker: str):
    """Fixture params: the student's file (marked `marker` and `student`) and the solution."""
    return [pytest.param("student", marks=[getattr(pytest.mark, marker), pytest.mark.student], id="student"),
            pytest.param("solution", marks=pytest.mark.solution, id="solution")]
