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


# Notebooks 00-04 and 09: every figure their prose quotes is printed by one of their own cells (or read from a shipped
# model's manifest they load, or set in their code), to the precision quoted. Figures from the papers are listed
# here, each with where it comes from.
PROSE_NOTEBOOKS = ["00_start_here", "01_vector_quantization", "02_codebook_size_and_dim", "03_raster_autoregression",
                   "04_multiscale_tokenizer", "09_text_to_image"]
PAPER_FIGURES = {
    "00_start_here": {"95%": "the level of the fd_emoji intervals", "0.01": "an example loss, converted to dB in "
                      "the same sentence", "26dB": "10 log10(2^2 / 0.01), the example loss in dB"},
    "02_codebook_size_and_dim": {"97%": "LlamaGen, Table 2 (codebook usage, 8-d l2 codes)",
                                 "2.19": "LlamaGen, Table 2 (rFID, 8-d l2 codes)",
                                 "90%": "a threshold in a question to try"},
    "09_text_to_image": {
        "2.3": "the LlamaGen paper's section number",
        "30dB": "the copy threshold: a training emoji decoded from its own tokens is about 28 dB from itself "
                "(notebook 07)"},
}
FIGURE = re.compile(r"(?<![\w.×/-])(\d+(?:\.\d+)?)(?:\s?(%|dB\b|min\b|minutes\b))?")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def prose_figures(markdown: str) -> list:
    """Quoted figures: numbers with a decimal point, or followed by %, dB or minutes (math, code and links aside)."""
    text = re.sub(r"\$[^$]*\$|`[^`]*`|\]\([^)]*\)|arXiv \d+\.\d+|\*\*Cost:\*\*[^\n]*(\n[^\n]+)*", " ", markdown)
    return [m.group(0).replace(" ", "") for m in FIGURE.finditer(text) if "." in m.group(1) or m.group(2)]


def shown(nb: dict) -> list:
    """Every number the notebook's cells print, or set in their code, or that the manifests of the shipped models it
    names hold."""
    text = ""
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        text += "".join(cell["source"])
        for out in cell.get("outputs", []):
            text += "".join(out.get("text", [])) + "".join(out.get("data", {}).get("text/plain", []))
    every_cell = "".join("".join(cell["source"]) for cell in nb["cells"])
    return [float(n) for n in NUMBER.findall(text + manifests_named(every_cell))]


def manifests_named(text: str) -> str:
    """The manifests (as JSON text) of the shipped models `text` names, e.g. emoji-var."""
    from minivar import pretrained
    names = sorted(set(re.findall(r"emoji-[a-z0-9-]+", text)) & set(pretrained.available()))
    return "".join(json.dumps(pretrained.manifest(name)) for name in names)


def matches(figure: str, numbers: list) -> bool:
    """Whether a recorded number rounds to the quoted figure (a share to a percentage, a count to millions)."""
    value = figure.rstrip("%").removesuffix("dB").removesuffix("minutes").removesuffix("min")
    half = 0.5 * 10.0 ** -(len(value.split(".")[1]) if "." in value else 0)
    v = float(value)
    scales = (1, 100) if figure.endswith("%") else (1, 1e-6)
    return any(abs(n * s - v) <= half + 1e-9 for n in numbers for s in scales)


@pytest.mark.parametrize("notebook", PROSE_NOTEBOOKS)
def test_every_figure_a_notebooks_prose_quotes_is_printed_by_it(notebook):
    nb = json.loads((ROOT / "notebooks" / f"{notebook}.ipynb").read_text())
    numbers = shown(nb)
    allowed = PAPER_FIGURES.get(notebook, {})
    unbacked = [f"cell {i}: {fig}" for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "markdown"
                for fig in prose_figures("".join(cell["source"])) if fig not in allowed and not matches(fig, numbers)]
    assert not unbacked, f"{notebook} quotes figures none of its cells prints: {unbacked}"


def test_the_prose_figure_check_reads_figures_and_rounds():
    assert prose_figures("usage 91% → 51%, PSNR 18.6 dB in `x = 0.5` and $\\beta = 0.25$, 8 steps, 3 min") == [
        "91%", "51%", "18.6dB", "3min"]
    assert matches("18.6dB", [18.57]) and matches("91%", [0.914]) and not matches("18.6dB", [18.54])
    assert matches("0.501", [0.5005]) and matches("3.07", [3073484]) and not matches("3.1", [3.2])


# The ablation sheets: every figure their prose quotes (before the questions) is in their own recorded table, or
# held by the manifest of a shipped model they name; what is derived from the table says how.
SHEET_FIGURES = {
    "05c_demo_budget.md": {"3.4": "var_minutes in benchmarks/results/demo.json, the demo's record"},
    "06_flowar.md": {"1.7": "half the width of the table's intervals", "1.4": "22.1 / 15.4 images/s, from the table",
                     "1.5": "a guidance value to plot"},
}


@pytest.mark.parametrize("sheet", sorted(p.name for p in (ROOT / "exercises" / "ablations").glob("*.md")))
def test_every_figure_a_sheets_prose_quotes_is_in_its_recorded_table(sheet):
    text = (ROOT / "exercises" / "ablations" / sheet).read_text()
    table = "\n".join(line for line in text.splitlines() if line.startswith("|"))
    prose = "\n".join(line for line in text.splitlines() if not line.startswith("|")).split("## Questions")[0]
    numbers = [float(n) for n in NUMBER.findall(table + manifests_named(text))]
    allowed = SHEET_FIGURES.get(sheet, {})
    unbacked = [f for f in prose_figures(re.sub(r"```.*?```", " ", prose, flags=re.S))
                if f not in allowed and not matches(f, numbers)]
    assert not unbacked, f"{sheet} quotes figures its recorded table does not hold: {unbacked}"


def test_the_grading_times_the_readme_quotes_are_the_recorded_ones():
    rows = list(csv.DictReader(open(ROOT / "benchmarks" / "results" / "grading_time.csv")))
    latest = {r["jobs"]: r["seconds"] for r in rows if r["exercises"] == "all"}
    readme = (ROOT / "README.md").read_text()
    quoted = re.search(r"took ([\d.]+) s alone and ([\d.]+) s with `--jobs 2`", readme)
    assert quoted and quoted.groups() == (latest["1"], latest["2"]), (quoted and quoted.groups(), latest)
