import os

import pytest

# Notebooks run by nbmake (in a kernel subprocess that inherits this environment) and any loop that asks
# minivar.smoke() shrink to seconds under pytest. Set MINIVAR_SMOKE=0 to run them for real.
os.environ.setdefault("MINIVAR_SMOKE", "1")

# Under pytest-xdist (the README's `-n 2`) the workers share the machine's cores: each takes its share of threads
# (and so do the notebook kernels, sandboxes and torchrun processes it starts), instead of each taking them all.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))
    import torch
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

BLANK = 'raise NotImplementedError("your code here")'  # what the student copy leaves where a solution was


def pytest_collect_file(parent, file_path):
    # Without --nbmake (the student copy's settings, see minivar/course.py), a notebook runs here instead: cell by
    # cell up to its first blank, so a fresh copy passes and each blank filled lets the notebook run further.
    if file_path.suffix == ".ipynb" and not parent.config.getoption("nbmake", default=False):
        return NotebookFile.from_parent(parent, path=file_path)
    return None


class NotebookFile(pytest.File):
    def collect(self):
        yield NotebookUpToBlank.from_parent(self, name=self.path.name)


class NotebookUpToBlank(pytest.Item):
    """A notebook's code cells in order, in a fresh kernel (smoke mode), up to the first cell left blank for the
    student; an error in any cell before it fails the test."""

    def runtest(self):
        import nbformat
        from nbclient import NotebookClient
        nb = nbformat.read(self.path, as_version=4)
        # a guard against a hung cell, not a speed check: a loaded CI machine may take minutes where a laptop takes
        # seconds
        client = NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(self.path.parent)}})
        with client.setup_kernel():
            for i, cell in enumerate(nb.cells):
                if cell.cell_type == "code" and BLANK in cell.source:
                    self.user_properties.append(("stopped at the blank in cell", i))
                    return
                client.execute_cell(cell, i)

    def repr_failure(self, excinfo, style=None):
        return str(excinfo.value)[-3000:]

    def reportinfo(self):
        return self.path, 0, f"{self.path.name}, up to its first blank"
