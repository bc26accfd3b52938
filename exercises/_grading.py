"""Shared by the graders: load the student's file or its solution, and parametrize a check over both.

`pytest -m exNN` grades the student's file only; the full test run (`pytest`) grades the solutions, and
tests/test_exercises.py checks that the untouched student stubs fail every grader.
"""

import ast
import importlib.util
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def load(name: str, who: str):
    path = HERE / ("solutions" if who == "solution" else "") / f"{name}.py"
    if who == "student":
        line = uses_minivar(path.read_text())
        if line:
            pytest.fail(f"{path.name} line {line} uses minivar, which holds the reference answers the graders compare "
                        f"with: solve the exercise with torch alone", pytrace=False)
    spec = importlib.util.spec_from_file_location(f"{who}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def uses_minivar(source: str):
    """The first line where a student's file imports or names minivar (its docstrings may mention it), else None."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    for node in ast.walk(tree):
        named = (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "minivar" for a in node.names)) or \
            (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "minivar") or \
            (isinstance(node, ast.Name) and node.id == "minivar") or \
            (isinstance(node, ast.Constant) and isinstance(node.value, str) and "minivar" in node.value
             and id(node) not in docstrings)
        if named:
            return node.lineno
    return None


def implementations(marker: str):
    """Fixture params: the student's file (marked `marker` and `student`) and the solution (where the solutions
    are: the student release has none)."""
    params = [pytest.param("student", marks=[getattr(pytest.mark, marker), pytest.mark.student], id="student")]
    if (HERE / "solutions").is_dir():
        params.append(pytest.param("solution", marks=pytest.mark.solution, id="solution"))
    return params
