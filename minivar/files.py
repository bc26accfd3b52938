"""Every file minivar writes, written so that nothing is ever half-written or written by two processes at once.

Two rules, one helper each:

- `atomic_write(path)`: write to a temporary file in the same folder, flush it to disk, then rename it over the
  target. A kill, a full disk or an exception mid-write leaves the earlier file as it was (a reader sees the old
  file or the new one, never half of one). Grids, sample archives, grades, manifests and results tables all go
  through it; checkpoints (checkpoint.save_checkpoint) follow the same rule.
- `PathLock(path)`: a run folder (or a results table, or a grades folder) has one owner at a time. Two
  `train` processes with the same run name would interleave their logs and overwrite each other's checkpoints;
  the second one is refused with the first one's process id and command instead. The lock is an OS lock
  (`fcntl.flock`) on a small hidden file beside the path: the OS releases it when its process dies, so a
  `kill -9` never leaves a stale lock behind.
"""

import contextlib
import csv
import io
import json
import os
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; folders there are not locked (one process per run is then on the user)
    fcntl = None


class FolderInUse(RuntimeError):
    """Another live process owns the folder (a run, a results table, a grades folder)."""


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", newline=None):
    """`with atomic_write(path) as fh: fh.write(...)`: the file appears whole at `path` when the block ends, or not
    at all (an error inside the block, a kill, a full disk: the earlier file at `path` is kept). mode "w" or "wb"."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes a whole file: mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp*"):  # left by a writer that was killed mid-write
        if not alive(stale.name.rsplit(".tmp", 1)[-1]):
            stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")  # the pid: two writers never share a temporary file
    try:
        with open(tmp, mode, newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except OSError as e:
        kept = "the earlier file is kept" if path.exists() else "nothing was written"
        raise OSError(e.errno, f"could not write {path} ({e.strerror or e}); {kept}. Free some space or choose "
                               f"another place") from None
    finally:
        tmp.unlink(missing_ok=True)


def alive(pid: str) -> bool:
    """Whether the process `pid` (digits) still runs on this machine (a temporary file it writes is not stale)."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists, someone else's
    return True


def write_text(path, text: str) -> Path:
    with atomic_write(path) as fh:
        fh.write(text)
    return Path(path)


def write_bytes(path, data: bytes) -> Path:
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_json(path, obj) -> Path:
    """obj as indented JSON, written atomically."""
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def append_csv_row(path, fields: list, row: dict) -> Path:
    """One more row of a results CSV (its header first when the file is new; missing fields stay empty), written by
    rewriting the whole table atomically: a kill mid-write never leaves a broken last row or a truncated table."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    if not old:
        w.writeheader()
    elif not old.endswith("\n"):
        old += "\n"
    w.writerow({k: row.get(k, "") for k in fields})
    with atomic_write(path, newline="") as fh:
        fh.write(old + buf.getvalue())
    return path


class PathLock:
    """`with PathLock(run_dir, "a run"):` — own `path` (a run folder, a results table, a grades folder) for the
    block, or fail at once naming the process that owns it. The lock is held on a small hidden file beside it
    (`.NAME.lock`, so a refused run leaves no folder behind; removed when the block ends) through an open file
    descriptor: released when the block ends or the process dies, even by kill -9 (its file then stays, unlocked,
    and the next owner takes it over). Re-entrant within one process. wait=True: block until the owner lets go
    instead of failing (for work the next owner would only repeat, such as building a token cache)."""

    _held = {}  # lock file -> [open file, depth], for this process

    def __init__(self, path, what: str = "a run", fix: str = "wait for it to finish, or stop it",
                 elsewhere: str = "choose another place", wait: bool = False):
        self.path, self.what, self.fix, self.elsewhere, self.wait = Path(path), what, fix, elsewhere, wait
        self.lock_file = self.path.parent / f".{self.path.name}.lock"

    def __enter__(self):
        key = str(self.lock_file.resolve())
        if key in PathLock._held:
            PathLock._held[key][1] += 1
            return self
        missing = [p for p in (self.lock_file.parent, *self.lock_file.parent.parents) if not p.exists()]
        self.made = missing[-1] if missing else None  # the first folder we create, removed again if left empty
        while True:
            try:
                self.lock_file.parent.mkdir(parents=True, exist_ok=True)
                fh = open(self.lock_file, "a+")
            except OSError as e:
                raise ValueError(f"cannot write {self.path} ({e.strerror or e}); {self.elsewhere}") from None
            if fcntl is None:
                break
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                owner = fh.read().strip() or "another process"
                fh.close()
                raise FolderInUse(f"{self.path} is in use by {owner}: two processes writing {self.what} at once "
                                  f"would mix their files. {self.fix[0].upper() + self.fix[1:]}") from None
            try:  # the owner before us removes the file as it lets go: make sure ours is still the one there
                if os.stat(self.lock_file).st_ino == os.fstat(fh.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            fh.close()
        fh.seek(0)
        fh.truncate()
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200] if sys.argv and sys.argv[0] else "python"
        fh.write(f"process {os.getpid()} ({command}, since {time.strftime('%Y-%m-%d %H:%M:%S')})")
        fh.flush()
        PathLock._held[key] = [fh, 1]
        return self

    def __exit__(self, *exc):
        key = str(self.lock_file.resolve())
        held = PathLock._held.get(key)
        if held is None:
            return False
        held[1] -= 1
        if held[1] == 0:
            fh = PathLock._held.pop(key)[0]
            with contextlib.suppress(OSError):
                self.lock_file.unlink()  # while still held: whoever opens the name next gets a fresh file
            fh.close()  # closing the descriptor releases the flock (a killed process's is closed by the OS)
            folder = self.lock_file.parent
            while self.made is not None and folder != self.made.parent:  # a refused run leaves no empty folders
                try:
                    folder.rmdir()
                except OSError:
                    break
                folder = folder.parent
        return False


def run_lock(run_dir) -> PathLock:
    """The lock of a training run's folder: a second `train` of the same name is refused, naming the first."""
    return PathLock(run_dir, "a run", "wait for it to finish or stop it, or train under another name (--set name=...)",
                    elsewhere="cannot write the run folder there: choose another place with --set out_dir=...")


__all__ = ["atomic_write", "write_text", "write_bytes", "write_json", "append_csv_row", "PathLock", "FolderInUse",
           "run_lock"]
