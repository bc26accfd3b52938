"""How long `course grade` takes for a class: ten students, every exercise, alone and with --jobs.

    python benchmarks/grading_time.py                          # a class of 10, every exercise, --jobs 1 and 2
    python benchmarks/grading_time.py --exercises ex07 --jobs 1

The class is the one an instructor should expect: an honest student (the solutions), a mixed one (every other
exercise solved), an empty folder, one whose ex07 loops forever, one who handed in the untouched stubs, and five
who cheat on ex07 (tests/fixtures/cheaters/: reaching minivar by importlib, exec of rot13 text, comparisons made
always true, the caller's frames, a detached process). Each grading runs as its own `python -m minivar course
grade` process, timed by the wall clock; the points it gives are printed too, so a timing of a wrong grading cannot
pass unnoticed. Rows go to <out>/grading_time.csv (default benchmarks/results/).
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import RESULTS, record

ROOT = Path(__file__).resolve().parents[1]
CHEATS = ["importlib_concat", "exec_rot13", "allclose_always_true", "caller_frame", "detached_process"]


def write_class(out: Path, mark: Path) -> int:
    """Ten student folders in `out` -> the number of parts the class should pass."""
    solutions = {p.name: p.read_text() for p in sorted((ROOT / "exercises" / "solutions").glob("ex*.py"))}
    stubs = {n: (ROOT / "exercises" / n).read_text() for n in solutions}
    ex07 = next(n for n in solutions if n.startswith("ex07"))

    def hand_in(student, files):
        (out / student / "exercises").mkdir(parents=True)
        for name, text in files.items():
            (out / student / "exercises" / name).write_text(text)

    hand_in("honest", solutions)
    hand_in("mixed", {n: (solutions if i % 2 else stubs)[n] for i, n in enumerate(solutions)})
    (out / "empty").mkdir(parents=True)
    endless = dict(solutions)
    endless[ex07] = solutions[ex07].replace("    if progress < anneal_start:", "    while True:\n        pass\n"
                                            "    if progress < anneal_start:", 1)
    assert endless[ex07] != solutions[ex07]
    hand_in("endless", endless)
    hand_in("stubs", stubs)
    for cheat in CHEATS:
        text = (ROOT / "tests" / "fixtures" / "cheaters" / f"{cheat}.py").read_text()
        hand_in(cheat, {**stubs, ex07: text.replace("{MARK!r}", repr(str(mark))).replace("{MARK}", str(mark))})
    return len(solutions)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", default="1,2", help="comma-separated --jobs values to time (default 1,2)")
    p.add_argument("--exercises", default="", help="comma-separated, e.g. ex07 (default: every grader)")
    p.add_argument("--timeout", type=float, default=30.0, help="each part's time limit (the endless loop costs it)")
    p.add_argument("--out", type=Path, default=RESULTS, help="where grading_time.csv goes")
    args = p.parse_args(argv)
    rows = []
    for jobs in [int(j) for j in args.jobs.split(",")]:
        with tempfile.TemporaryDirectory(prefix="minivar-class-") as tmp:
            subs, mark = Path(tmp) / "submissions", Path(tmp) / "mark"
            write_class(subs, mark)
            cmd = [sys.executable, "-m", "minivar", "course", "grade", str(subs), "--timeout", str(args.timeout),
                   "--jobs", str(jobs)] + (["--exercises", args.exercises] if args.exercises else [])
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, stdin=subprocess.DEVNULL)
            seconds = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"grading failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
            summary = next(line for line in proc.stdout.splitlines() if line.startswith("graded "))
            rows.append({"students": 10, "exercises": args.exercises or "all", "jobs": jobs,
                         "timeout_s": args.timeout, "seconds": round(seconds, 1), "result": summary,
                         "late_write": mark.exists()})
    print(f"{'jobs':>4} {'seconds':>8}  result")
    for r in rows:
        print(f"{r['jobs']:>4} {r['seconds']:>8.1f}  {r['result']}")
    record(args.out / "grading_time.csv", rows, torch.device("cpu"))
    print(f"recorded in {args.out / 'grading_time.csv'}")


if __name__ == "__main__":
    main()
