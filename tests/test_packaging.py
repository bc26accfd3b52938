"""The promises of the README and of the setup files, checked."""

import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def requirement_name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_names_every_runtime_dependency():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = (ROOT / "environment.yml").read_text()
    pip_lines = [line.strip()[2:] for line in env.splitlines() if line.strip().startswith("- ")]
    named = {requirement_name(x) for x in pip_lines}
    missing = [d for d in deps if requirement_name(d) not in named]
    assert not missing, f"environment.yml lacks {missing}"
    assert "python=3.11" in env and "-e .[dev]" in env


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    demo, tests = blocks[0], blocks[1]
    assert "-m minivar demo" in demo and "pip install" in demo
    assert "pytest" in tests and '".[dev]"' in tests
    marker = readme.split("<!-- test-command -->", 1)[1]
    assert marker.lstrip().startswith("```bash\n" + tests)
    assert "test-command" in (ROOT / ".ci" / "run").read_text()


def test_no_version_pins_only_ranges():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in deps["dependencies"] + sum(deps["optional-dependencies"].values(), []):
        assert "==" not in req, f"pin {req!r}: declare a range instead"


def test_bundled_data_is_small_enough():
    assert (ROOT / "data" / "emoji.npz").stat().st_size < 25e6


def run_ci_with(tmp_path, test_command):
    import shutil
    import subprocess
    (tmp_path / ".ci").mkdir(exist_ok=True)
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "README.md").write_text(f"# x\n\n<!-- test-command -->\n```bash\n{test_command}\n```\n")
    return subprocess.run(["bash", ".ci/run"], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_ci_fails_when_pytest_collects_no_tests(tmp_path):
    import sys
    (tmp_path / "empty").mkdir()
    proc = run_ci_with(tmp_path, f"{sys.executable} -m pytest -p no:cacheprovider empty")
    assert proc.returncode == 5 and "collected no tests" in proc.stderr, proc.stdout + proc.stderr


def test_ci_runs_the_readme_command_and_passes_its_status(tmp_path):
    assert run_ci_with(tmp_path, "echo ran > marker").returncode == 0
    assert (tmp_path / "marker").read_text() == "ran\n"
    assert run_ci_with(tmp_path, "exit 3").returncode == 3


def test_shipped_weights_install_with_the_package(tmp_path):
    """A non-editable install (a wheel) carries minivar/weights/: the checkpoint, its manifest and its log."""
    import shutil
    import subprocess
    import sys
    import zipfile
    src = tmp_path / "src"
    shutil.copytree(ROOT / "minivar", src / "minivar", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    weights = src / "minivar" / "weights"
    weights.mkdir(exist_ok=True)
    for name in ("emoji-test.pt", "emoji-test.json", "emoji-test.metrics.jsonl"):
        (weights / name).write_bytes(b"x")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("minivar-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("emoji-test.pt", "emoji-test.json", "emoji-test.metrics.jsonl"):
        assert f"minivar/weights/{name}" in names, names


def test_the_readmes_demo_figure_is_the_recorded_demo_run():
    import json
    rec = json.loads((ROOT / "benchmarks" / "results" / "demo.json").read_text())
    readme = (ROOT / "README.md").read_text()
    low, high = rec["fd_emoji_ci95"]
    assert f"fd_emoji {rec['fd_emoji']:.2f} [{low:.2f}, {high:.2f}]" in readme
    assert f"trains {rec['var_steps']} steps in its\n{rec['var_minutes']:g} minutes" in readme
    assert f"guidance {rec['guidance']:g}, top-p {rec['top_p']:g}" in readme
    from minivar import recipes
    assert rec["var_sets"] == recipes.DEMO_VAR, "the recorded demo ran another VAR than the demo trains now"
    assert re.search(r"\d+ blocks of \d+", readme).group(0) == "{} blocks of {}".format(
        *(s.split("=")[1] for s in recipes.DEMO_VAR[:2]))
