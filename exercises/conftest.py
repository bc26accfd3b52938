def pytest_configure(config):
    # A student grading run (`pytest -m ex01`): short tracebacks, so the message naming the part stands out.
    if config.option.markexpr.startswith("ex") and config.option.tbstyle == "auto":
        config.option.tbstyle = "short"
