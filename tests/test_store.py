"""Resumable result storage: skip finished samples, survive a torn last line, refuse mixed configs."""

import json

import pytest

from dllm.errors import DllmError
from dllm.evals.store import ResultStore, config_fingerprint

CONFIG = {"model": "llada-8b-instruct", "task": "gsm8k", "gen_length": 256, "threshold": 0.9}


def run(path, ids, config=CONFIG, computed=None):
    """A miniature eval loop: compute only the samples not on disk yet."""
    with ResultStore(path, config) as store:
        for i in ids:
            if i in store.done_ids():
                continue
            if computed is not None:
                computed.append(i)
            store.append({"id": i, "correct": i % 2 == 0})
        return store.records()


def test_resume_skips_done_ids(tmp_path):
    path = tmp_path / "out" / "results.jsonl"  # parent directories are created
    first = []
    run(path, [0, 1, 2], computed=first)
    assert first == [0, 1, 2]
    second = []
    records = run(path, [0, 1, 2, 3, 4], computed=second)
    assert second == [3, 4]
    assert [r["id"] for r in records] == [0, 1, 2, 3, 4]
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["_header"]["fingerprint"] == config_fingerprint(CONFIG)
    assert len(lines) == 6


@pytest.mark.parametrize("torn", ['{"id": 2, "corr', '{"id": 2, "correct": true}'])
def test_partial_last_line_is_dropped_and_recomputed(tmp_path, torn):
    path = tmp_path / "results.jsonl"
    run(path, [0, 1])
    good_size = path.stat().st_size
    with open(path, "a") as f:
        f.write(torn)  # crash mid-write: no trailing newline (and maybe not even valid JSON)
    with pytest.warns(UserWarning, match="interrupted write"):
        store = ResultStore(path, CONFIG)
    assert store.done_ids() == {0, 1}
    assert path.stat().st_size == good_size  # truncated back to the last good line
    store.close()
    computed = []
    run(path, [0, 1, 2], computed=computed)
    assert computed == [2]
    assert [json.loads(line).get("id") for line in path.read_text().splitlines()[1:]] == [0, 1, 2]


def test_invalid_json_last_line_with_newline_is_dropped(tmp_path):
    path = tmp_path / "results.jsonl"
    run(path, [0])
    with open(path, "a") as f:
        f.write('{"id": 1, "cor\x00\n')
    with pytest.warns(UserWarning):
        assert ResultStore(path, CONFIG).done_ids() == {0}


def test_torn_header_is_rewritten(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"_header": {"versi')
    with pytest.warns(UserWarning):
        store = ResultStore(path, CONFIG)
    store.append({"id": 0})
    store.close()
    assert json.loads(path.read_text().splitlines()[0])["_header"]["config"] == CONFIG


def test_corruption_before_the_last_line_is_refused(tmp_path):
    path = tmp_path / "results.jsonl"
    run(path, [0, 1, 2])
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = "garbage\n"
    path.write_text("".join(lines))
    with pytest.raises(DllmError, match="line 3 is corrupt"):
        ResultStore(path, CONFIG)


def test_different_config_refuses(tmp_path):
    path = tmp_path / "results.jsonl"
    run(path, [0, 1])
    with pytest.raises(DllmError, match=r"different run config \(threshold: 0.9 -> 0.8\)"):
        ResultStore(path, {**CONFIG, "threshold": 0.8})
    with pytest.raises(DllmError, match="different run config"):
        ResultStore(path)  # no config at all is a different config too
    # Key order does not matter; the same config resumes.
    reordered = dict(reversed(list(CONFIG.items())))
    with ResultStore(path, reordered) as store:
        assert store.done_ids() == {0, 1}


def test_fingerprint_is_stable_under_json_round_trip():
    assert config_fingerprint({"stop": ("a", "b"), "k": 1}) == config_fingerprint({"k": 1, "stop": ["a", "b"]})
    assert config_fingerprint({"k": 1}) != config_fingerprint({"k": 2})


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"id": 0, "correct": true}\n')
    with pytest.raises(DllmError, match="no run header"):
        ResultStore(path, CONFIG)


def test_duplicate_and_missing_ids_are_refused(tmp_path):
    with ResultStore(tmp_path / "r.jsonl", CONFIG) as store:
        store.append({"id": "HumanEval/0", "passed": True})
        with pytest.raises(DllmError, match="already stored"):
            store.append({"id": "HumanEval/0", "passed": False})
        with pytest.raises(DllmError, match="no 'id' field"):
            store.append({"passed": True})
        with pytest.raises(DllmError, match="not JSON-serialisable"):
            store.append({"id": 1, "x": object()})
        assert len(store) == 1 and "HumanEval/0" in store


def test_second_writer_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultStore(path, CONFIG):
        with pytest.raises(DllmError, match="in use"):
            ResultStore(path, CONFIG)
    ResultStore(path, CONFIG).close()  # free again once the first is closed


def test_each_record_is_on_disk_immediately(tmp_path):
    path = tmp_path / "r.jsonl"
    store = ResultStore(path, CONFIG)
    store.append({"id": 7, "correct": True})
    # Another reader sees the line before close (flushed and fsynced per record).
    assert json.loads(path.read_text().splitlines()[-1]) == {"id": 7, "correct": True}
    store.close()
