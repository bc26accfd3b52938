"""The exercise graders themselves: they pass on the solutions (collected from exercises/ in the full run)
and every one of them fails on the untouched student stubs, naming the part."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("ex,parts", [("ex01", 4), ("ex02", 4), ("ex03", 5), ("ex04", 3), ("ex05", 5),
                                      ("ex06", 4), ("ex07", 4), ("ex09", 4)])
def test_untouched_stubs_fail_every_grader_with_a_named_part(ex, parts):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", ex, "-p", "no:cacheprovider", "-q", "--no-header",
                           "-rf", "exercises"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:]
    assert f"{parts} failed" in out and "passed" not in out.splitlines()[-1], out[-3000:]
    for part in range(1, parts + 1):
        assert f"Part {part} (" in out, f"no message naming part {part}:\n{out[-3000:]}"
