import re


def pytest_configure(config):
    # A student grading run (`pytest -m ex01`): short tracebacks, so the message naming the part stands out.
    # `pytest exercises/test_ex01.py` (a grader named, no -m) grades the student's file too, rather than deselecting
    # it as the full run's `-m "not student"` would.
    named = {m.group(1) for a in config.invocation_params.args if (m := re.search(r"test_(ex\d\d)\.py", str(a)))}
    if named and "-m" not in config.invocation_params.args and not any(
            str(a).startswith("-m") for a in config.invocation_params.args):
        config.option.markexpr = " or ".join(sorted(named))
    if config.option.markexpr.startswith("ex") and config.option.tbstyle == "auto":
        config.option.tbstyle = "short"
