"""Figures quoted in the lab handouts come from a record: every fd_emoji interval an answer key quotes is printed by
a committed notebook, stored in a results table (benchmarks/results/*.csv) or in an ablation sheet's recorded
table."""

import csv
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INTERVAL = re.compile(r"(\d+\.\d\d) \[ *(\d+\.\d\d), +(\d+\.\d\d)\]")


def recorded_intervals() -> set:
    found = set()
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        for cell in json.loads(nb.read_text())["cells"]:
            for out in cell.get("outputs", []):
                text = "".join(out.get("text", [])) + "".join(out.get("data", {}).get("text/plain", []))
                found |= set(INTERVAL.findall(text))
    for table in (ROOT / "benchmarks" / "results").glob("*.csv"):
        for row in csv.DictReader(open(table)):
            if row.get("fd_emoji") and row.get("fd_low") and row.get("fd_high"):
                found.add(tuple(f"{float(row[k]):.2f}" for k in ("fd_emoji", "fd_low", "fd_high")))
    for sheet in (ROOT / "exercises" / "ablations").glob("*.md"):
        tables = "\n".join(line for line in sheet.read_text().splitlines() if line.startswith("|"))
        found |= set(INTERVAL.findall(tables))
    return found


@pytest.mark.parametrize("handout", sorted(p.name for p in (ROOT / "exercises" / "labs").glob("0*.md")))
def test_every_interval_an_answer_key_quotes_is_recorded(handout):
    text = (ROOT / "exercises" / "labs" / handout).read_text()
    key = text.split("<!-- BEGIN KEY -->", 1)[-1]
    quoted = set(INTERVAL.findall(key))
    missing = quoted - recorded_intervals()
    assert not missing, f"{handout} quotes intervals no notebook output, results table or sheet records: {missing}"


def test_the_interval_pattern_reads_printed_and_typed_intervals():
    assert INTERVAL.findall("fd_emoji   5.90 [ 4.36,  7.44], and 6.21 [4.75, 7.66]") == [
        ("5.90", "4.36", "7.44"), ("6.21", "4.75", "7.66")]
