"""The child side of the grading sandbox (minivar/sandbox.py): run one student's functions, send back values only.

This file is copied into a fresh folder that holds nothing else but the student's file and the probes (the toy
models a grader hands to a student's function), and run there as

    python -I -S _child.py READ_FD WRITE_FD MEMORY_BYTES FILE_BYTES PATH...

with PATH... the standard library and a copy of site-packages made of links, without minivar. So the student's
code runs where `import minivar` fails, where no grader, solution or other student is on a relative path, and
where nothing it does can reach the grader's objects: each request arrives as bytes, each answer leaves as bytes
(torch.save of tensors, numbers, strings and lists), and the parent loads them with weights_only=True and compares
them with its own references. This file imports nothing from minivar, on purpose: it must run where minivar is not.

A request is {"op": "import", "file": ...} or {"op": "call", "fn": ..., "args": [...], "kwargs": {...},
"grad": None or {"wrt": [...], "output": [...], "upstream": tensor or None}}; every answer is a dict.
"""

import importlib.util
import io
import os
import struct
import sys
import traceback

MAX_MESSAGE = 256 << 20  # bytes in one request or answer


def receive(fd):
    head = read_exactly(fd, 8)
    if head is None:
        return None
    size = struct.unpack("<Q", head)[0]
    if size > MAX_MESSAGE:
        raise ValueError(f"a request of {size} bytes")
    import torch
    return torch.load(io.BytesIO(read_exactly(fd, size)), weights_only=True)


def read_exactly(fd, n):
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def send(fd, message):
    import torch
    buf = io.BytesIO()
    torch.save(message, buf)
    data = buf.getvalue()
    os.write(fd, struct.pack("<Q", len(data)))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def plain(value, depth=0):
    """What can cross to the parent: tensors (detached copies that keep requires_grad), numbers, strings, None and
    lists/tuples/dicts of them. Anything else becomes {"__unsupported__": its type's name} for the grader to name."""
    import torch
    if depth > 20:
        return {"__unsupported__": "a structure nested too deep"}
    if isinstance(value, torch.Tensor):
        copy = value.detach().clone()
        if value.requires_grad and copy.is_floating_point():
            copy.requires_grad_(True)
        return copy
    if value is None or type(value) in (bool, int, float, str, complex):
        return value
    if type(value) in (list, tuple):
        return type(value)(plain(v, depth + 1) for v in value)
    if type(value) is dict and all(type(k) in (str, int) for k in value):
        return {k: plain(v, depth + 1) for k, v in value.items()}
    return {"__unsupported__": type(value).__name__}


def resolve(value, probes, module):
    """Turn the probe specs of a request into live objects (one object per probe id, so a probe and its bound
    method are the same toy)."""
    if isinstance(value, dict) and "__generator__" in value:
        import torch
        g = torch.Generator()
        g.set_state(value["__generator__"])
        return g
    if isinstance(value, dict) and "__probe__" in value:
        pid = value["__probe__"]
        if pid not in probes:
            cls = getattr(module, value["cls"])
            probes[pid] = cls(*resolve(value["args"], probes, module), **resolve(value["kwargs"], probes, module))
        obj = probes[pid]
        return getattr(obj, value["attr"]) if value.get("attr") else obj
    if isinstance(value, list):
        return [resolve(v, probes, module) for v in value]
    if isinstance(value, tuple):
        return tuple(resolve(v, probes, module) for v in value)
    if isinstance(value, dict):
        return {k: resolve(v, probes, module) for k, v in value.items()}
    return value


def failure(e, student_file):
    """An exception as the student should read it: its type, message and the deepest line of their own file."""
    line = None
    for frame in traceback.extract_tb(e.__traceback__):
        if os.path.basename(frame.filename) == student_file:
            line = frame.lineno
    return {"error": type(e).__name__, "message": str(e)[:1000], "line": line}


def call(request, student, probe_module, student_file):
    import torch
    probes = {}
    args = resolve(request["args"], probes, probe_module)
    kwargs = resolve(request["kwargs"], probes, probe_module)
    grad = request.get("grad")
    fn = getattr(student, request["fn"], None)
    if not callable(fn):
        return {"error": "AttributeError", "message": f"{student_file} defines no function {request['fn']}()",
                "line": None}
    if grad:
        for i in grad["wrt"]:
            args[i] = args[i].detach().clone().requires_grad_(True)
    try:
        out = fn(*args, **kwargs)
        if grad:
            picked = out
            for key in grad["output"]:
                picked = picked[key]
            if not isinstance(picked, torch.Tensor) or not picked.requires_grad:
                return {"error": "NoGradient", "message": "the output does not depend on the inputs through autograd "
                        "(was it computed with .detach(), .item(), numpy or torch.no_grad()?)", "line": None}
            up = grad["upstream"]
            (picked if up is None else picked * up).sum().backward()
    except BaseException as e:  # noqa: BLE001 - whatever the student's code raises is reported, SystemExit too
        if isinstance(e, KeyboardInterrupt):
            raise
        return failure(e, student_file)
    answer = {"result": plain(out), "args": plain([a if isinstance(a, torch.Tensor) else None for a in args]),
              "probes": {pid: plain(getattr(p, "report", lambda: {})()) for pid, p in probes.items()}}
    if grad:
        answer["grads"] = [plain(args[i].grad) for i in grad["wrt"]]
    return answer


def main():
    read_fd, write_fd = int(sys.argv[1]), int(sys.argv[2])
    import resource  # limits first, before any student code: lowered, they cannot be raised again
    for limit, value in ((resource.RLIMIT_AS, int(sys.argv[3])), (resource.RLIMIT_FSIZE, int(sys.argv[4])),
                         (resource.RLIMIT_CORE, 0)):
        hard = resource.getrlimit(limit)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(limit, (value, value))
    sys.path[:] = [os.getcwd()] + sys.argv[5:]
    import torch
    torch.set_num_threads(1)
    student = probe_module = student_file = None
    while True:
        request = receive(read_fd)
        if request is None:
            return
        if request["op"] == "import":
            student_file = request["file"]
            try:
                if os.path.exists("_probes.py"):
                    probe_module = import_file("_probes.py", "_probes")
                student = import_file(student_file, student_file[:-3])
                answer = {"result": "imported"}
            except BaseException as e:  # noqa: BLE001 - a SyntaxError, an import of something absent, an exit()
                if isinstance(e, KeyboardInterrupt):
                    raise
                answer = failure(e, student_file)
                if isinstance(e, SyntaxError):
                    answer["line"] = e.lineno
                    answer["message"] = e.msg
        else:
            answer = call(request, student, probe_module, student_file)
        send(write_fd, answer)


def import_file(path, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(os.getcwd(), path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    main()
