"""Every bad command line ends in exactly one ``error:`` line on stderr and exit status 2, never a traceback;
Ctrl-C ends in one ``interrupted`` line and status 130; ``--version``, bare ``dllm`` and ``python -m dllm`` work.

The rows where the entry point itself is the point (argument parsing, argv/stdin bytes, start-up, signals) run
the installed ``dllm`` console script or ``python -m dllm`` in a subprocess; the rest go through
``dllm.cli.app.main`` in process (each subprocess pays ~3 s importing torch).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dllm.assets import DEFAULT_MODEL
from dllm.cli.app import main

SCRIPT_NEXT_TO_PYTHON = Path(sys.executable).with_name("dllm")
DLLM_SCRIPT = str(SCRIPT_NEXT_TO_PYTHON) if SCRIPT_NEXT_TO_PYTHON.is_file() else shutil.which("dllm")
ENTRY_POINTS = {"script": [DLLM_SCRIPT], "module": [sys.executable, "-m", "dllm"]}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def run_dllm(via: str, args: list, stdin: bytes | None = None, timeout: float = 60) -> tuple[int, str, str]:
    if via == "script" and DLLM_SCRIPT is None:
        pytest.fail("the dllm console script is not installed (pip install -e .)")
    proc = subprocess.run(ENTRY_POINTS[via] + list(args), input=stdin if stdin is not None else b"",
                          capture_output=True, timeout=timeout, env=ENV)
    return (proc.returncode, proc.stdout.decode("utf-8", "surrogateescape"),
            proc.stderr.decode("utf-8", "surrogateescape"))


def run_in_process(capsys, args: list[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, out: str, err: str, *needles: str) -> str:
    assert "Traceback" not in out + err, err
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# --- the entry point itself: parsing, argv/stdin bytes, --version, help ---------------------------------------------

SUBPROCESS_ERRORS = [
    pytest.param("script", ["generate", "--tresh", "0.9", "sort:8315="], None,
                 ["No such option: --tresh", "--threshold"], id="mistyped-option"),
    pytest.param("module", ["generate"], None, ["Missing argument", "prompt"], id="missing-argument"),
    pytest.param("script", ["generate", "--threshold", "abc", "sort:8315="], None, ["'--threshold'"],
                 id="threshold-not-a-number"),
    pytest.param("module", ["nosuchcommand"], None, ["nosuchcommand"], id="unknown-command"),
    pytest.param("script", ["generate", os.fsencode("sort:83\udcff5=")], None, ["prompt is not UTF-8", "0xff"],
                 id="argv-not-utf8"),
    pytest.param("module", ["generate", "-"], b"sort:83\xff5=\n", ["standard input is not UTF-8", "0xff"],
                 id="stdin-not-utf8"),
]


@pytest.mark.parametrize("via, args, stdin, needles", SUBPROCESS_ERRORS)
def test_bad_command_lines_are_one_error_line(via, args, stdin, needles):
    assert_one_error_line(*run_dllm(via, args, stdin), *needles)


def test_version_and_help_exit_0():
    from dllm import __version__

    code, out, err = run_dllm("script", ["--version"])
    assert (code, out.strip(), err) == (0, f"dllm {__version__}", "")
    code, out, err = run_dllm("script", [])
    assert code == 0 and err == "" and "generate" in out and "Usage" in out
    code, out, err = run_dllm("module", ["--help"])
    assert code == 0 and err == "" and "python -m dllm" in out and "generate" in out


def test_eval_rejects_a_bad_threshold_before_any_model_work(tmp_path):
    out_dir = tmp_path / "results"
    t0 = time.perf_counter()
    result = run_dllm("script", ["eval", "--bench", "synthetic", "--threshold", "1.5", "--out", str(out_dir),
                                 "--no-progress"])
    elapsed = time.perf_counter() - t0
    assert_one_error_line(*result, "1.5")
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert not out_dir.exists() or not any(out_dir.rglob("*")), sorted(out_dir.rglob("*"))


@pytest.fixture(scope="module")
def long_ckpt(tmp_path_factory) -> Path:
    """A random tiny model with a long maximum length, so one-token-per-step decoding runs for minutes."""
    from dllm.models.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("long") / "tiny-llada", "llada", vocab_size=64, hidden=32,
                                layers=1, heads=2, intermediate=64, max_length=4096)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see when the model is loaded")
def test_ctrl_c_prints_interrupted_and_exits_130(long_ckpt):
    weights = str(long_ckpt / "model.safetensors")
    proc = subprocess.Popen(
        [DLLM_SCRIPT, "generate", "--model", str(long_ckpt), "--policy", "lowconf", "--gen-length", "3000",
         "--no-stop-at-eos", "--no-warmup", "--no-baseline", "w5 w6"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    try:
        deadline = time.monotonic() + 60
        loaded = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                loaded = weights in Path(f"/proc/{proc.pid}/maps").read_text()
            except OSError:
                pass
            if loaded:
                break
            time.sleep(0.05)
        assert loaded, f"the model was not loaded within 60 s (exit status {proc.poll()})"
        time.sleep(0.5)  # into the decoding loop
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err_text = err.decode("utf-8", "replace")
    assert proc.returncode == 130, err_text
    assert err_text.splitlines() == ["interrupted"] and "Traceback" not in err_text


# --- in process: the checks behind the parser ----------------------------------------------------------------------

IN_PROCESS_ERRORS = [
    pytest.param(["generate", "--threshold", "1.5", "sort:8315="], ["--threshold 1.5", "(0, 1]"], id="threshold-1.5"),
    pytest.param(["generate", "--policy", "nope", "sort:8315="], ["unknown policy 'nope'", "threshold", "(presets: turbo)"],
                 id="policy"),
    pytest.param(["generate", "--cache", "nope", "sort:8315="], ["unknown cache 'nope'", "prefix"], id="cache"),
    pytest.param(["generate", "--gen-length", "0", "sort:8315="], ["--gen-length", "got 0"], id="gen-length-0"),
    pytest.param(["generate", "--option", "foo", "sort:8315="], ["'foo'", "key=value"], id="option-without-="),
    pytest.param(["generate", "--option", "nosuch=1", "sort:8315="], ["'nosuch'"], id="option-unknown"),
    pytest.param(["eval", "--bench", "nope"], ["'nope'", "synthetic"], id="eval-bench"),
]


@pytest.mark.parametrize("args, needles", IN_PROCESS_ERRORS)
def test_bad_options_are_one_error_line(capsys, args, needles):
    assert_one_error_line(*run_in_process(capsys, args), *needles)


def test_gsm8k_file_that_is_not_utf8(capsys, tmp_path):
    data = tmp_path / "test.jsonl"
    data.write_bytes(b'{"question": "ok", "answer": "#### 1"}\n{"question": "caf\xe9", "answer": "#### 2"}\n')
    line = assert_one_error_line(*run_in_process(
        capsys, ["eval", "--bench", "gsm8k", "--data", str(data), "--limit", "1", "--out", str(tmp_path / "r"),
                 "--no-progress"]), str(data), "not UTF-8", "0xe9")
    assert "line 2" in line


def test_train_tiny_out_that_cannot_be_a_directory(capsys, tmp_path):
    regular = tmp_path / "a-file"
    regular.write_text("not a directory")
    assert_one_error_line(*run_in_process(capsys, ["train-tiny", "--out", str(regular / "run"), "--steps", "1"]),
                          "--out", str(regular / "run"))


@pytest.mark.parametrize("key, value, expected", [
    ("n_heads", "four", "a positive integer"),
    ("rope_theta", "big", "a number"),
    ("weight_tying", "no", "true or false"),
    ("eos_token_id", [2, "x"], "a non-negative integer or a list of them or null"),
])
def test_checkpoint_config_value_of_the_wrong_type(capsys, tmp_path, key, value, expected):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(DEFAULT_MODEL, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config[key] = value
    (ckpt / "config.json").write_text(json.dumps(config))
    line = assert_one_error_line(*run_in_process(capsys, ["generate", "--model", str(ckpt), "sort:8315="]),
                                 str(ckpt / "config.json"), key, json.dumps(value), expected)
    assert line.endswith(f"expected {expected}")


def test_checkpoint_config_missing_a_required_key(capsys, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(DEFAULT_MODEL, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    del config["d_model"]
    (ckpt / "config.json").write_text(json.dumps(config))
    assert_one_error_line(*run_in_process(capsys, ["generate", "--model", str(ckpt), "sort:8315="]), "'d_model'")


def test_store_recovery_warning_is_one_line(capsys, tmp_path):
    """Resuming from a results file whose last record was cut mid-write: the store's recovery notice is one
    ``warning:`` line, not Python's two-line ``file:line: UserWarning`` form."""
    import warnings

    from dllm.models.tiny import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "tiny", "llada", vocab_size=64, hidden=32, layers=1, heads=2,
                                intermediate=64, max_length=256)
    args = ["eval", "--bench", "synthetic", "--policy", "threshold", "--limit", "1", "--no-baseline",
            "--model", str(ckpt), "--out", str(tmp_path / "r"), "--no-progress"]
    code, _, err = run_in_process(capsys, args)
    assert code == 0, err
    (results,) = list((tmp_path / "r").rglob("*.jsonl"))
    results.write_bytes(results.read_bytes()[:-20])  # an interrupted write: the last line loses its end
    before = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, _, err = run_in_process(capsys, args)
    assert code == 0, err
    warning_lines = [line for line in err.splitlines() if "incomplete" in line]
    assert warning_lines and all(line.startswith("warning: ") and str(results) in line for line in warning_lines), err
    assert "UserWarning" not in err and "Traceback" not in err
    assert warnings.showwarning is before
