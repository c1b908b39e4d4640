"""Issue 19: a comparison survives its workers and itself; one writer per output; one-line errors."""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from avalanche_mind.io.locking import OutputLock
from avalanche_mind.runner import compare, loop, session

ROOT = Path(__file__).resolve().parents[1]


def _compare(*args: str):
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        status = compare.main([str(a) for a in args])
    return status, err.getvalue()


def test_a_killed_worker_fails_only_its_own_run_and_a_rerun_completes_it(tmp_path, monkeypatch):
    real = loop.run_strategy

    def oom_kill(name, spec, base, benchmark, seed, *args, **kwargs):
        if seed == 0:  # as the kernel's out-of-memory killer would
            os.kill(os.getpid(), signal.SIGKILL)
        return real(name, spec, base, benchmark, seed, *args, **kwargs)

    monkeypatch.setattr(loop, "run_strategy", oom_kill)  # the forked workers inherit it
    argv = ["--tiny", "--strategies", "naive", "--seeds", "0", "1", "--jobs", "2", "--out", tmp_path]
    status, err = _compare(*argv)
    assert status == 1, err[-2000:]
    result = json.loads((tmp_path / "results.json").read_text())
    [failed] = result["failed"]
    assert (failed["strategy"], failed["seed"]) == ("naive", 0) and "SIGKILL" in failed["error"]
    assert [run["seed"] for run in result["strategies"]["naive"]["runs"]] == [1]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["naive-seed1.json"]
    monkeypatch.undo()
    status, err = _compare(*argv)  # the same command again: only the failed run is trained
    assert status == 0, err[-2000:]
    assert "1 of 2 runs already recorded" in err
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["failed"] == [] and [r["seed"] for r in again["strategies"]["naive"]["runs"]] == [0, 1]
    assert again["strategies"]["naive"]["runs"][1] == result["strategies"]["naive"]["runs"][0]


def test_records_of_other_settings_are_not_mixed_in(tmp_path):
    status, err = _compare("--tiny", "--strategies", "naive", "--out", tmp_path)
    assert status == 0, err[-2000:]
    status, err = _compare("--tiny", "--strategies", "naive", "--out", tmp_path, "--set", "lr=0.02")
    assert status == 2
    assert err.strip().splitlines()[-1].startswith(f"error: {tmp_path} holds runs of a comparison with other settings")
    assert "Traceback" not in err


def _holder(target: Path) -> subprocess.Popen:
    """Another process holding the lock of ``target``, until killed."""
    code = ("import sys, time; from avalanche_mind.io.locking import OutputLock; OutputLock(sys.argv[1], 'x').acquire();"
            " print('locked', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_of_the_same_out_is_refused_naming_the_first(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(session, "run", lambda *a, **k: pytest.fail("trained while --out was in use"))
    holder = _holder(out)
    try:
        status, err = _compare("--tiny", "--strategies", "naive", "--out", out)
    finally:
        holder.kill()
        holder.wait()
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: --out {out} is being written by process {holder.pid} (")
    # The holder was killed: its lock does not outlive it.
    with OutputLock(out, "--out"):
        pass
    assert not list(tmp_path.glob(".*.lock"))


def test_a_second_writer_of_the_same_checkpoint_is_refused(tmp_path, capsys, monkeypatch):
    from test_cli import TINY

    from avalanche_mind import MIND, cli

    ckpt = tmp_path / "run.pt"
    monkeypatch.setattr(MIND, "train", lambda *a, **k: pytest.fail("trained while --checkpoint was in use"))
    with OutputLock(ckpt, "--checkpoint"):
        code = cli.main(["train", *TINY, "--checkpoint", str(ckpt)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"avalanche-mind train: error: --checkpoint {ckpt} is being written by process "
                          f"{os.getpid()} (")


def test_ctrl_c_in_compare_says_what_is_kept_in_one_line(tmp_path, monkeypatch):
    real = loop.run_strategy

    def interrupt_second(name, spec, base, benchmark, seed, *args, **kwargs):
        if seed == 1:
            raise KeyboardInterrupt
        return real(name, spec, base, benchmark, seed, *args, **kwargs)

    monkeypatch.setattr(loop, "run_strategy", interrupt_second)
    status, err = _compare("--tiny", "--strategies", "naive", "--seeds", "0", "1", "--jobs", "1", "--quiet",
                           "--out", tmp_path)
    assert status == 130
    assert err.strip() == (f"compare: interrupted; 1 finished run(s) are recorded in {tmp_path / 'runs'}; continue "
                           f"with the same command and --resume-from {tmp_path}")
    status, err = _compare("--tiny", "--tune", "--strategies", "ewc", "--seeds", "1", "--jobs", "1", "--quiet",
                           "--out", tmp_path / "tune")
    assert status == 130 and err.strip() == "compare: interrupted; nothing of the interrupted search was written"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_in_compare_with_workers_ends_them_and_exits_130(tmp_path):

    hang = ("import sys, time; from avalanche_mind.runner import loop\n"
            "def run_strategy(*a, **k):\n    print('started', flush=True); time.sleep(3600)\n"
            "loop.run_strategy = run_strategy\nfrom avalanche_mind.cli import main\nsys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", hang, "compare", "--tiny", "--strategies", "naive", "--seeds", "0",
                             "1", "--jobs", "2", "--quiet", "--out", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "started"  # a worker is training
        workers = {int(c) for p in Path(f"/proc/{proc.pid}/task").glob("*/children") for c in p.read_text().split()}
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.strip() == (f"compare: interrupted; 0 finished run(s) are recorded in {tmp_path / 'runs'}; continue "
                           f"with the same command and --resume-from {tmp_path}")
    assert workers and not any(Path(f"/proc/{pid}").exists() for pid in workers)  # ended and reaped


def test_a_full_disk_while_drawing_leaves_a_complete_results_json(tmp_path, monkeypatch):
    from avalanche_mind.runner import report

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "plot_curves", no_space)
    status, err = _compare("--tiny", "--strategies", "naive", "--quiet", "--out", tmp_path)
    assert status == 1 and err.strip() == (
        f"error: could not write every output under {tmp_path} (No space left on device); its results.json holds "
        f"every figure: once there is space, draw the table and plots with compare --redraw {tmp_path}")
    result = json.loads((tmp_path / "results.json").read_text())  # written first, whole
    assert result["strategies"]["naive"]["runs"]
    assert not list(tmp_path.glob(".*tmp*"))
    monkeypatch.undo()
    status, err = _compare("--redraw", tmp_path)
    assert status == 0 and (tmp_path / "accuracy_curves.png").is_file()


def test_a_record_that_cannot_be_written_does_not_stop_the_comparison(tmp_path, monkeypatch):
    from avalanche_mind.runner import records

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records, "save_run", no_space)
    status, err = _compare("--tiny", "--strategies", "naive", "--out", tmp_path)
    assert status == 0, err[-2000:]
    assert "could not record [naive seed 0]" in err and "No space left on device" in err
    assert json.loads((tmp_path / "results.json").read_text())["strategies"]["naive"]["runs"]


def test_a_failing_results_write_prints_the_table_first_and_saves_every_figure_elsewhere(tmp_path, capsys,
                                                                                        monkeypatch):
    import avalanche_mind.runner.report as report

    def full_disk(result, out):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_all", full_disk)
    status = compare.main(["--tiny", "--strategies", "naive", "--out", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    assert status == 1
    assert "| Naive (lower bound)" in captured.out  # the table, printed before the write
    message = captured.err.strip()
    assert message.startswith(f"error: could not write the results under {tmp_path / 'out'} (No space left on "
                              "device); every figure is saved in ")
    saved = Path(message.split("every figure is saved in ", 1)[1].split(" instead", 1)[0])
    assert json.loads(saved.read_text())["strategies"]["naive"]["tag_matrix_mean"]
    monkeypatch.undo()  # the fallback is a comparison's folder: --redraw draws its table and plots
    assert message.endswith(f"(its table and plots: compare --redraw {saved.parent})")
    assert compare.main(["--redraw", str(saved.parent)]) == 0
    assert (saved.parent / "accuracy_curves.png").is_file()
    shutil.rmtree(saved.parent)
