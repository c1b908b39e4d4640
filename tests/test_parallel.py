"""The same figures wherever a run runs: one process, worker processes (``--jobs``), Ray tasks (``--ray``),
and ``avalanche-mind train`` against the runner's ``mind`` row."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from avalanche_mind.runner import compare, parallel

TINY = ["--tiny", "--strategies", "mind", "naive", "--seeds", "0", "1"]
SKIP_TOP = {"started", "environment", "total_time_s", "files"}
SKIP_KEYS = {"train_time_s", "eval_time_s", "wall_time_s", "peak_rss_mb"}
"""Timings, process memory, the host and the output paths: the only fields allowed to differ between two runs."""


def _compare(out: Path, *args: str):
    """``compare.main`` in this process: (exit status, results.json or None, stderr)."""
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        status = compare.main([*args, "--out", str(out)])
    path = out / "results.json"
    return status, (json.loads(path.read_text()) if path.exists() else None), err.getvalue()


def differences(a, b, path="") -> list:
    """Every figure that differs (floats bit for bit), skipping only timings, memory and host fields."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        skip = SKIP_TOP if path == "" else set()
        return [d for k in a if k not in skip | SKIP_KEYS for d in differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} and {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if type(a) is type(b) and a == b else [f"{path}: {a!r} and {b!r}"]


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    status, result, err = _compare(tmp_path_factory.mktemp("serial"), *TINY, "--jobs", "1")
    assert status == 0, err[-3000:]
    assert result["environment"]["jobs"] == 1
    return result


def test_jobs_2_gives_every_figure_of_one_process(serial, tmp_path):
    status, result, err = _compare(tmp_path, *TINY, "--jobs", "2")
    assert status == 0, err[-3000:]
    assert result["environment"]["jobs"] == 2
    assert differences(serial, result) == []
    assert len(serial["strategies"]["mind"]["runs"]) == 2 and serial["failed"] == []
    # Progress: whole lines, each prefixed with its run, one per finished experience.
    progress = [line for line in err.splitlines() if "experience" in line and "TAg on seen" in line]
    assert len(progress) == 4 * 3
    assert all(re.fullmatch(r"  \[(mind|naive) seed [01]\] experience [123]/3: TAg on seen [0-9.]+%  \(\d+ s\)", line)
               for line in progress), progress


def test_a_failed_run_is_reported_and_the_others_written(tmp_path):
    # mind_kwargs reach the mind row only: it fails in its worker, naive does not.
    status, result, err = _compare(tmp_path, "--tiny", "--strategies", "mind", "naive", "--jobs", "2",
                                   "--set", "mind_kwargs.distill_loss=bogus")
    assert status == 1
    assert list(result["strategies"]) == ["naive"]
    [failed] = result["failed"]
    assert (failed["strategy"], failed["seed"]) == ("mind", 0)
    assert failed["error"].startswith("ValueError: unknown distill_loss 'bogus'") and "Traceback" in failed["traceback"]
    assert "error: mind seed 0 failed: ValueError" in err
    assert any(note.startswith("FAILED: mind seed 0") for note in result["notes"])
    assert (tmp_path / "results.md").is_file()


def test_ray_tasks_on_a_local_ray_give_every_figure_of_one_process(serial, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        status, result, err = _compare(tmp_path, *TINY, "--ray")
    finally:
        ray.shutdown()
    assert status == 0, err[-3000:]
    assert result["environment"]["ray"] == "local"
    assert differences(serial, result) == []


def test_ray_without_ray_installed_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(parallel, "ray_installed", lambda: False)
    status, result, err = _compare(tmp_path, "--tiny", "--ray")
    assert status == 2 and result is None
    assert err.strip() == "error: --ray needs Ray, an optional extra: pip install -e '.[ray]'"


def test_train_gives_the_runner_s_mind_row(serial, tmp_path):
    """One seeding path and thread count: ``avalanche-mind train --preset tiny`` is the runner's mind row.
    The train process runs without OMP_NUM_THREADS, so its thread count is its own default."""
    results = tmp_path / "train.json"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-m", "avalanche_mind.cli", "train", "--preset", "tiny", "--seed", "0",
                           "--quiet", "--results", str(results)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    train = json.loads(results.read_text())
    run = serial["strategies"]["mind"]["runs"][0]
    assert train["record"]["torch_threads"] == serial["environment"]["torch_threads"] == 1
    for kind, final_row in (("TAg", run["tag_matrix"][-1]), ("TAw", run["taw_matrix"][-1])):
        per_experience = [train["metrics"][f"Top1_{kind}_Acc_Exp/eval_phase/test_stream/Task000/Exp{j:03d}"]
                          for j in range(len(final_row))]
        assert per_experience == final_row, kind
    # Equal test experiences: the stream figure (sample-weighted) is the runner's mean over experiences.
    assert train["final"]["TAg"] == pytest.approx(run["tag"], abs=1e-12)
    assert train["final"]["TAw"] == pytest.approx(run["taw"], abs=1e-12)


def _children(pid: int) -> set:
    return {int(c) for path in Path(f"/proc/{pid}/task").glob("*/children") for c in path.read_text().split()}


def _alive(pid: int) -> bool:
    """Any thread of ``pid`` not yet exited (a killed process's leader is a zombie before its other threads are)."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            states.append(stat.read_text().split(")")[-1].split()[0])
        except OSError:
            pass
    return any(state != "Z" for state in states)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_comparison_killed_mid_run_resumes_with_the_same_figures(serial, tmp_path):
    """SIGKILL the parent while a run hangs: the finished runs are recorded, no worker outlives it, and the
    rerun trains only the rest, ending with every figure of an uninterrupted comparison."""
    import signal
    import time

    out = tmp_path / "out"
    hang = ("import sys, time; from avalanche_mind.runner import loop; real = loop.run_strategy\n"
            "def run_strategy(name, spec, base, benchmark, seed, *a, **k):\n"
            "    if (name, seed) == ('mind', 1):\n        time.sleep(3600)\n"
            "    return real(name, spec, base, benchmark, seed, *a, **k)\n"
            "loop.run_strategy = run_strategy\nfrom avalanche_mind.cli import main\nsys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", hang, "compare", *TINY, "--jobs", "2", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        deadline = time.monotonic() + 600  # a bound on waiting, not a measurement
        while len(list((out / "runs").glob("*.json"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sorted(p.name for p in (out / "runs").glob("*.json")) == [
            "mind-seed0.json", "naive-seed0.json", "naive-seed1.json"]
        workers = _children(proc.pid)
        assert workers  # the hanging run's worker
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers), "a worker outlived the killed comparison"
    assert not (out / "results.json").exists()
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        status = compare.main([*TINY, "--jobs", "2", "--resume-from", str(out)])
    assert status == 0, err.getvalue()[-3000:]
    assert "3 of 4 runs already recorded" in err.getvalue()
    assert differences(serial, json.loads((out / "results.json").read_text())) == []
