"""Containment of untrusted code: each case must end as failed/timeout, quickly, with the host untouched."""

import os
import sys
import time

import pytest

from dllm.errors import DllmError
from dllm.evals.execution import run_untrusted

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox targets Linux")


def test_clean_program_passes_and_output_is_captured():
    res = run_untrusted("print('hello from the child')\nassert 1 + 1 == 2", timeout=5)
    assert res.passed and res.status == "passed"
    assert "hello from the child" in res.output


def test_exception_is_failed_with_traceback():
    res = run_untrusted("assert 1 == 2, 'wrong answer'", timeout=5)
    assert not res.passed and res.status == "failed"
    assert "AssertionError: wrong answer" in res.output


def test_syntax_error_is_failed():
    assert run_untrusted("def f(:\n    pass", timeout=5).status == "failed"


def test_os_system_is_blocked(tmp_path):
    marker = tmp_path / "pwned"
    res = run_untrusted(f"import os\nos.system('touch {marker}')", timeout=5)
    assert res.status == "failed"
    assert "os.system is disabled" in res.output
    assert not marker.exists()
    assert os.system("true") == 0  # the guard lives in the child only


@pytest.mark.parametrize(
    "code",
    [
        "import os\nos.remove({p!r})",
        "import os\nos.unlink({p!r})",
        "import posix\nposix.unlink({p!r})",
        "import pathlib\npathlib.Path({p!r}).unlink()",
        "import shutil\nshutil.rmtree({d!r})",
        "import os\nos.rename({p!r}, 'stolen')",
        "open({p!r}, 'w').write('')",
        "import os\nos.open({p!r}, os.O_WRONLY | os.O_TRUNC)",
        "import subprocess\nsubprocess.run(['rm', '-f', {p!r}])",
    ],
)
def test_files_outside_the_sandbox_survive(tmp_path, code):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    res = run_untrusted(code.format(p=str(sentinel), d=str(tmp_path)), timeout=5)
    assert res.status == "failed", res.output
    assert "PermissionError" in res.output
    assert sentinel.read_text() == "keep me"


def test_scratch_files_inside_the_sandbox_work_and_are_deleted():
    code = (
        "import os, tempfile\n"
        "open('scratch.txt', 'w').write('x')\n"
        "fd, p = tempfile.mkstemp(); os.close(fd); os.remove(p)\n"
        "print('CWD=' + os.getcwd())\n"
        "print('HOME=' + os.environ['HOME'])\n"
    )
    res = run_untrusted(code, timeout=5)
    assert res.passed, res.output
    cwd = res.output.split("CWD=")[1].splitlines()[0]
    assert res.output.split("HOME=")[1].splitlines()[0] == cwd
    assert cwd != os.getcwd() and not os.path.exists(cwd)


def test_minimal_environment(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:1")
    monkeypatch.setenv("DLLM_SECRET_TOKEN", "s3cret")
    res = run_untrusted("import os\nprint(sorted(os.environ))", timeout=5)
    assert res.passed
    assert "HTTPS_PROXY" not in res.output and "DLLM_SECRET_TOKEN" not in res.output


def test_infinite_loop_times_out_and_is_killed():
    start = time.monotonic()
    res = run_untrusted("while True:\n    pass", timeout=1.0)
    assert res.status == "timeout" and not res.passed
    assert time.monotonic() - start < 4


def test_sleeping_program_times_out():
    start = time.monotonic()
    res = run_untrusted("import time\ntime.sleep(60)", timeout=0.5)
    assert res.status == "timeout"
    assert time.monotonic() - start < 3


@pytest.mark.parametrize(
    "code",
    ["x = ' ' * (64 * 1024 ** 3)", "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))"],
)
def test_unbounded_memory_is_contained(code):
    start = time.monotonic()
    res = run_untrusted(code, timeout=5, memory_mb=256)
    assert res.status in ("failed", "timeout") and not res.passed
    if res.status == "failed":
        assert "MemoryError" in res.output
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    "code",
    [
        "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM)",
        "import socket\nsocket.create_connection(('127.0.0.1', 9))",
        "import _socket\n_socket.socket()",
        "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/')",
    ],
)
def test_network_is_disabled(code):
    res = run_untrusted(code, timeout=5)
    assert res.status == "failed"
    assert "disabled in the sandbox" in res.output


@pytest.mark.parametrize("code", ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "exit()"])
def test_early_exit_does_not_count_as_passing(code):
    res = run_untrusted(code + "\nraise AssertionError('tests not reached')", timeout=5)
    assert res.status == "failed" and not res.passed


def test_process_creation_is_blocked():
    res = run_untrusted("import os\npid = os.fork()\nprint('forked', pid)", timeout=5)
    assert res.status == "failed" and "forked" not in res.output


def test_bad_arguments_raise_dllm_error():
    with pytest.raises(DllmError, match="timeout"):
        run_untrusted("pass", timeout=0)
    with pytest.raises(DllmError, match="memory_mb"):
        run_untrusted("pass", memory_mb=1)
