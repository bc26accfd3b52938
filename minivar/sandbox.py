"""Run a student's functions in a child process that sees nothing of the course, and get values back.

    with Sandbox(source, "ex01_vector_quantization.py", probes=Path("exercises/_probes.py")) as ex:
        idx = ex.nearest_code(z, codebook)             # runs in the child; idx is a tensor the parent loaded
        gz, gc = ex.gradients("vq_forward", (z, codebook, 0.5), wrt=(0, 1), output=(0,), upstream=g)
        toy = ex.probe("CachedToy", 7, 4, 0)            # a toy model the child builds from the probes file
        tokens = ex.sample_with_cache(toy, labels, 5)   # the student's loop calls the toy in the child
        toy.state                                       # what the toy reported after that call

Why a grader can trust what comes back (and the student's code cannot change the grader):
- the child runs `python -I -S` in a fresh temporary folder holding only a copy of the student's file, the probes
  and the child's own script (minivar/sandbox_child.py); its import path is the standard library and a copy of
  site-packages made of links that leaves minivar out, so `import minivar` (by any spelling) fails, and no grader,
  solution or other student lies on a relative path;
- requests and answers cross as bytes on two pipes, and the parent loads answers with `torch.load(...,
  weights_only=True)`: tensors, numbers, strings and lists, never code. The grader's references and comparisons
  stay in the parent, out of the child's reach; a tensor argument the student changed in place is copied back, so
  "do not modify the input" stays checkable;
- the child runs in a session of its own with limits on memory (RLIMIT_AS), file size and output (only a tail is
  kept), and a time limit per call; when it ends, its whole session is killed, and with `reap=True` (what `course
  grade` uses, Linux) this process adopts and kills anything the child left running in a session of its own.
What it does not stop: code that reads or writes other files by an absolute path with the grader's user rights.
That is what a container or a throwaway account is for.
"""

import ast
import io
import itertools
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch

CHILD = Path(__file__).with_name("sandbox_child.py")
ROOT = Path(__file__).resolve().parent.parent
MAX_MESSAGE = 256 << 20


@dataclass
class Limits:
    import_timeout: float = 60.0  # seconds to import the student's file (torch included)
    call_timeout: float = 120.0   # seconds for one call, unless a deadline set by `time_limit` comes first
    memory_gb: float = 8.0        # address space of the child (importing torch alone maps about 3.3 GB)
    file_mb: float = 64.0         # the largest file the child may write
    output_kb: float = 8.0        # the tail of the child's printed output kept for messages


class StudentError(Exception):
    """An error in the student's code (or its process), as the student should read it."""

    def __init__(self, kind: str, message: str, line=None):
        self.kind, self.message, self.line = kind, message, line
        where = f" on line {line}" if line else ""
        super().__init__(f"{kind}{where}: {message}")


class StudentTimeout(StudentError):
    pass


class StudentCrashed(StudentError):
    pass


class ProbeViolation(AssertionError):
    """A toy model handed to the student's function was used against its rules (its message says how)."""


class Unsupported:
    """A value of a type that cannot cross from the child (its type's name stands in for it)."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self):
        return f"<a {self.type_name}>"


class Probe:
    """A toy object built in the child from the probes file (the grader builds its twin locally for references)."""

    def __init__(self, pid: int, cls: str, args: tuple, kwargs: dict, attr: str = ""):
        self.pid, self.cls, self.args, self.kwargs, self.attr = pid, cls, args, kwargs, attr
        self.state = {}  # what the child's object reported (its `report()`) after the last call it took part in

    def method(self, name: str) -> "Probe":
        """The bound method `name` of this probe, to pass as an argument (e.g. a toy's `next_input`)."""
        bound = Probe(self.pid, self.cls, self.args, self.kwargs, name)
        bound.state = self.state  # one object in the child: one state
        return bound


# ---------------------------------------------------------------- processes: limits, sessions, orphans

_LIVE, _LIVE_LOCK = set(), threading.Lock()
_REAPING = {"since": None}


def enable_reaper() -> bool:
    """Make this process adopt the orphans of its children (Linux' child subreaper), so `reap_orphans` can kill a
    student's process that detached itself into a session of its own. False where the system has no such thing."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
            return False
    except (OSError, AttributeError):
        return False
    if _REAPING["since"] is None:
        _REAPING["since"] = _ticks_now()
    return True


def _ticks_now() -> float:
    with open("/proc/uptime") as fh:
        return float(fh.read().split()[0]) * os.sysconf("SC_CLK_TCK")


def reap_orphans():
    """Kill and collect every child of this process that is not a live sandbox and was born after `enable_reaper`:
    the processes students' code left behind (adopted by this process when their parents died)."""
    if _REAPING["since"] is None:
        return
    for _ in range(50):  # killing one may orphan its own children onto us: repeat until none is left
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid, ppid, born = int(entry), int(fields[1]), float(fields[19])
            with _LIVE_LOCK:
                ours = pid in _LIVE
            if ppid == os.getpid() and not ours and born >= _REAPING["since"]:
                found.append(pid)
        if not found:
            return
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError, PermissionError):
                pass
        time.sleep(0.01)


def child_paths(farm: Path) -> list:
    """The import path of the child: this interpreter's own, less the course's checkout (all but a virtual
    environment inside it), the current folder and any folder of graders or solutions; every folder that holds
    minivar (an install, or the editable install's finder) is replaced by a copy made of links to the rest of it."""
    paths = []
    for entry in sys.path:
        if not entry:
            continue
        p = Path(entry).resolve()
        if p.suffix == ".zip" and p.is_file():
            paths.append(str(p))
            continue
        inside = ROOT in p.parents and p.name not in ("site-packages", "dist-packages")  # a venv there is fine
        if not p.is_dir() or p == ROOT or inside or p in ROOT.parents or p == Path.cwd().resolve() or \
                (p / "_grading.py").exists() or (p / "solutions").is_dir():
            continue
        names = os.listdir(p)
        if not any("minivar" in n.lower() for n in names):
            paths.append(str(p))
            continue
        copy = farm / f"{len(paths)}-{p.name}"
        copy.mkdir(parents=True)
        for n in names:
            if "minivar" not in n.lower() and not n.endswith(".pth"):
                os.symlink(p / n, copy / n)
        paths.append(str(copy))
    return paths


# ---------------------------------------------------------------- the sandbox

class Sandbox:
    """One student file, imported in a child process of its own; its functions called by name with values."""

    _ids = itertools.count()

    def __init__(self, source: str, filename: str, probes: Path = None, limits: Limits = None, reap: bool = False):
        self.source, self.filename, self.limits = source, filename, limits or Limits()
        self.probes_source = Path(probes).read_text() if probes else None
        self.reap, self.proc, self.deadline = reap, None, None
        self.tail, self.dead = deque(), None

    # -- life

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        """Start the child and import the student's file in it (within limits.import_timeout)."""
        self.tmp = Path(tempfile.mkdtemp(prefix="minivar-sandbox-"))
        work = self.tmp / "work"
        work.mkdir()
        (work / "tmp").mkdir()
        (work / self.filename).write_text(self.source)
        if self.probes_source is not None:
            (work / "_probes.py").write_text(self.probes_source)
        shutil.copy(CHILD, work / "_child.py")
        paths = child_paths(self.tmp / "site")
        req_r, req_w = os.pipe()
        ans_r, ans_w = os.pipe()
        out_r, out_w = os.pipe()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "TMPDIR": str(work / "tmp"),
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONHASHSEED": "0", "LANG": "C.UTF-8"}
        limits = [str(int(self.limits.memory_gb * 2 ** 30)), str(int(self.limits.file_mb * 2 ** 20))]
        with _LIVE_LOCK:  # registered before the reaper can see it
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "_child.py", str(req_r), str(ans_w), *limits, *paths], cwd=work,
                env=env, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w, pass_fds=(req_r, ans_w),
                start_new_session=True)
            _LIVE.add(self.proc.pid)
        for fd in (req_r, ans_w, out_w):
            os.close(fd)
        self.req, self.ans = req_w, ans_r
        self.reader = threading.Thread(target=self._keep_tail, args=(out_r,), daemon=True)
        self.reader.start()
        answer = self._ask({"op": "import", "file": self.filename}, self.limits.import_timeout, "importing")
        if "error" in answer:
            self.close()
            raise StudentError(answer["error"], answer["message"], answer.get("line"))
        return self

    def close(self):
        """Kill the child's whole session (and, with reap, whatever it left behind) and remove its folder."""
        if self.proc is None:
            return
        try:  # killed before its pipes close: a child that saw them close could run exit hooks first
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for fd in (self.req, self.ans):
            try:
                os.close(fd)
            except OSError:
                pass
        with _LIVE_LOCK:
            _LIVE.discard(self.proc.pid)
        if self.reap:
            reap_orphans()
        self.reader.join(timeout=5)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.proc = None

    def time_limit(self, seconds: float):
        """From now on, every call must end within `seconds` in all (one part of a grader)."""
        self.deadline, self.part_seconds = time.monotonic() + seconds, seconds

    @property
    def output(self) -> str:
        """The tail of what the child printed."""
        return b"".join(self.tail).decode(errors="replace")

    def _keep_tail(self, fd):
        keep = int(self.limits.output_kb * 1024)
        size = 0
        while chunk := os.read(fd, 65536):
            self.tail.append(chunk)
            size += len(chunk)
            while size - len(self.tail[0]) > keep:
                size -= len(self.tail.popleft())
        os.close(fd)

    # -- calls

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.call(name, *args, **kwargs)

    def probe(self, cls: str, *args, **kwargs) -> Probe:
        """A toy from the probes file, built in the child when a call gets it as an argument."""
        return Probe(next(self._ids), cls, args, kwargs)

    def call(self, fn: str, *args, **kwargs):
        """fn(*args, **kwargs) in the child -> its result (tensors, numbers, lists...)."""
        return self._call(fn, args, kwargs, None)[0]

    def gradients(self, fn: str, args, kwargs=None, wrt=(0,), output=(), upstream=None) -> list:
        """The gradients at args[i] for i in wrt of sum(out * upstream) (upstream None: sum(out)), where out is fn's
        result indexed by `output` (e.g. (0,) for the first of a tuple) -> [tensor or None]."""
        grad = {"wrt": list(wrt), "output": list(output), "upstream": upstream}
        return self._call(fn, args, kwargs or {}, grad)[1]

    def _call(self, fn, args, kwargs, grad):
        probes = {}
        request = {"op": "call", "fn": fn, "args": [wire(a, probes) for a in args],
                   "kwargs": {k: wire(v, probes) for k, v in kwargs.items()}, "grad": grad}
        timeout = self.limits.call_timeout if self.deadline is None else self.deadline - time.monotonic()
        answer = self._ask(request, timeout, f"{fn}()")
        if "error" in answer:
            if answer["error"] == "NotImplementedError":
                raise NotImplementedError(answer["message"] or "not done yet")
            raise StudentError(answer["error"], answer["message"], answer.get("line"))
        for mine, theirs in zip(args, answer.get("args", [])):  # changes made in place, made here too
            if isinstance(mine, torch.Tensor) and isinstance(theirs, torch.Tensor) and \
                    theirs.shape == mine.shape and theirs.dtype == mine.dtype and not torch.equal(theirs, mine):
                with torch.no_grad():
                    mine.copy_(theirs)
        for pid, state in answer.get("probes", {}).items():
            if pid in probes and isinstance(state, dict):
                probes[pid].state.clear()
                probes[pid].state.update(unwire(state))
        for p in probes.values():
            if p.state.get("violation"):
                raise ProbeViolation(p.state["violation"])
        grads = [unwire(g) for g in answer.get("grads", [])]
        return unwire(answer.get("result")), grads

    def _ask(self, request, timeout, what):
        if self.proc is None or self.dead:
            raise StudentCrashed("Stopped", self.dead or "the student's process is not running")
        buf = io.BytesIO()
        torch.save(request, buf)
        data = buf.getvalue()
        try:
            os.write(self.req, struct.pack("<Q", len(data)))
            view = memoryview(data)
            while view:
                view = view[os.write(self.req, view):]
            head = self._read(8, timeout, what)
            size = struct.unpack("<Q", head)[0]
            if size > MAX_MESSAGE:
                self._die(f"it sent an answer of {size} bytes")
                raise StudentCrashed("TooLarge", f"{what} sent back {size / 2 ** 20:.0f} MB; the limit is "
                                     f"{MAX_MESSAGE >> 20} MB")
            body = self._read(size, timeout, what)
        except (BrokenPipeError, EOFError):
            self.proc.wait()
            code = self.proc.returncode
            how = f"killed by signal {-code}" + (" (out of memory?)" if -code == signal.SIGKILL else "") \
                if code < 0 else f"exit code {code}"
            tail = " / ".join(self.output.strip().splitlines()[-3:])
            tail = tail if len(tail) < 160 else "..." + tail[-157:]
            self._die(f"the process ended ({how})")
            raise StudentCrashed("ProcessEnded", f"the student's process ended during {what} ({how})"
                                 + (f"; the end of what it printed: {tail}" if tail else "")) from None
        try:
            return torch.load(io.BytesIO(body), weights_only=True)
        except Exception as e:  # noqa: BLE001 - a forged or cut answer: refuse it, whatever went wrong
            self._die("its answer could not be read")
            raise StudentCrashed("BadAnswer", f"the answer to {what} could not be read as values ({e})") from None

    def _read(self, n, timeout, what) -> bytes:
        chunks, got, end = [], 0, time.monotonic() + max(timeout, 0)
        while got < n:
            left = end - time.monotonic()
            ready = select.select([self.ans], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                self._die(f"{what} ran out of time")
                limit = f"{timeout:g} s" if self.deadline is None else f"{self.part_seconds:g} s, its part's limit"
                raise StudentTimeout("Timeout", f"{what} was still running after {limit} (an endless loop?)")
            chunk = os.read(self.ans, min(n - got, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _die(self, why):
        """Stop the child now (a timeout, a bad answer): later calls say why."""
        self.dead = why
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Restarting:
    """A sandbox that starts again after a call that ran out of time or crashed: one bad part costs that part."""

    def __init__(self, source: str, filename: str, probes: Path = None, limits: Limits = None, reap: bool = False):
        self.source, self.filename, self.probes, self.limits, self.reap = source, filename, probes, limits, reap
        self.box = None

    def get(self) -> Sandbox:
        if self.box is None or self.box.dead:
            self.close()
            self.box = Sandbox(self.source, self.filename, self.probes, self.limits, self.reap)
            self.box.start()
        return self.box

    def close(self):
        if self.box is not None:
            self.box.close()
            self.box = None

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.get(), name)


def uses_minivar(source: str):
    """The first line where a student's file imports or names minivar (its docstrings may mention it), else None."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None  # the sandbox reports it, with its line
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


def wire(value, probes: dict):
    """A request's value as it crosses: probes and generators as specs, containers walked."""
    if isinstance(value, Probe):
        probes[value.pid] = value
        return {"__probe__": value.pid, "cls": value.cls, "args": [wire(a, probes) for a in value.args],
                "kwargs": {k: wire(v, probes) for k, v in value.kwargs.items()}, "attr": value.attr}
    if isinstance(value, torch.Generator):
        return {"__generator__": value.get_state()}
    if isinstance(value, list):
        return [wire(v, probes) for v in value]
    if isinstance(value, tuple):
        return tuple(wire(v, probes) for v in value)
    if isinstance(value, dict):
        return {k: wire(v, probes) for k, v in value.items()}
    return value


def unwire(value):
    """An answer's value: {"__unsupported__": name} becomes an Unsupported (no tensor, no number: a grader names it)."""
    if isinstance(value, dict):
        if set(value) == {"__unsupported__"}:
            return Unsupported(str(value["__unsupported__"]))
        return {k: unwire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwire(v) for v in value]
    if isinstance(value, tuple):
        return tuple(unwire(v) for v in value)
    return value


__all__ = ["Sandbox", "Restarting", "uses_minivar", "Limits", "Probe", "StudentError", "StudentTimeout",
           "StudentCrashed", "ProbeViolation", "Unsupported", "enable_reaper", "reap_orphans"]
