"""Every script in examples/ runs as a script, in its tiny (--small) configuration.

The examples run in one child Python process, one after the other, each with
``runpy`` as ``__main__`` (what ``python examples/x.py --small`` does), in its own
working folder: importing Avalanche costs ~10 s, paid once instead of per example.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from wandb_records import read_offline_run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
EXPECTED = {
    # What each example must print, beside finishing without an exception.
    "avalanche_pipeline.py": ["TAw accuracy on the whole test stream", "TAg accuracy on the whole test stream"],
    "own_model.py": ["after experience 2", "of the weights allocated"],
    "self_distillation.py": ["parameters held", "TAw"],
    "wandb_logging.py": ["offline run in ", "wandb sync "],
    "resume_from_checkpoint.py": ["resuming: 1 of 3 experiences already trained", "TAg classes"],
}
LOGGED = ("teacher/loss", "distillation/loss", "capacity/total", "forgetting/test/TAw",
          "accuracy_matrix/test/table._type", "accuracy_matrix/test/heatmap._type")
"""What the W&B example's offline run must hold."""
# Every example runs with --quiet; the resume example runs twice, logging to W&B offline: stopped after
# one experience (without --quiet, to see the progress bars), then resumed.
WANDB = ["--wandb", "--wandb-mode", "offline"]
ARGS = {p.name: ["--quiet", *(WANDB if p.name == "resume_from_checkpoint.py" else [])] for p in EXAMPLES}
LOUD = ("resume_from_checkpoint.py", ("--stop-after", "1", *WANDB))
RUNS = [(p, list(LOUD[1])) for p in EXAMPLES if p.name == LOUD[0]] + [(p, ARGS[p.name]) for p in EXAMPLES]
PROGRESS_BAR = "distillation exp"
"""The description of MIND's distillation progress bar (on stderr)."""

DRIVER = textwrap.dedent(
    """
    import contextlib, io, json, os, runpy, sys, traceback
    from avalanche_mind import MIND

    runs, report, calls = json.loads(sys.argv[1]), [], []

    def recorded(name):  # how each example drives MIND: which calls, on an experience or a stream
        original = getattr(MIND, name)

        def method(self, data, *args, **kwargs):
            calls.append([name, hasattr(data, "current_experience")])
            return original(self, data, *args, **kwargs)

        return method

    MIND.train, MIND.eval = recorded("train"), recorded("eval")
    for path, args, cwd in runs:
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)
        sys.argv = [path, "--small", *args]
        out, err, status = io.StringIO(), io.StringIO(), 0
        calls.clear()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(path, run_name="__main__")
            except SystemExit as exit:
                status = exit.code or 0
            except BaseException:
                status = 1
                traceback.print_exc(file=out)
        report.append({"path": path, "args": args, "status": status, "stdout": out.getvalue(),
                       "stderr": err.getvalue(), "calls": list(calls)})
    print("REPORT" + json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    base = tmp_path_factory.mktemp("examples")
    runs = [(str(p), args, str(base / p.stem)) for p, args in RUNS]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "AVALANCHE_MIND_DATA": str(base / "glyph-cache"),  # the glyphs are rendered once
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(base / "wandb"),
        "PYTHONWARNINGS": "ignore",
    }
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(runs)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert "REPORT" in done.stdout, f"example driver failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    entries = json.loads(done.stdout.split("REPORT", 1)[1])
    return {(Path(e["path"]).name, tuple(e["args"])): e for e in entries}, base


def test_every_example_is_covered():
    assert {p.name for p in EXAMPLES} == set(EXPECTED)


def test_quiet_silences_the_progress_bars(report):
    runs, _ = report
    loud = runs[LOUD]
    assert loud["status"] == 0 and PROGRESS_BAR in loud["stderr"], loud["stderr"][-2000:]
    for path in EXAMPLES:
        run = runs[(path.name, tuple(ARGS[path.name]))]
        assert PROGRESS_BAR not in run["stderr"], f"{path.name} --quiet still shows progress bars"


def test_pipeline_example_is_an_ordinary_avalanche_loop(report):
    """MIND goes through the template's calls only: train on one experience, evaluate the stream, repeat."""
    runs, _ = report
    run = runs[("avalanche_pipeline.py", tuple(ARGS["avalanche_pipeline.py"]))]
    n_experiences = 3  # --small
    assert run["calls"] == [["train", True], ["eval", False]] * n_experiences


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path, report):
    runs, base = report
    if path.name == "resume_from_checkpoint.py":
        first = runs[LOUD]
        assert first["status"] == 0, first["stdout"]
        assert "stopping after 1 experiences" in first["stdout"]
    run = runs[(path.name, tuple(ARGS[path.name]))]
    assert run["status"] == 0, f"{path.name} failed:\n{run['stdout'][-4000:]}"
    for text in EXPECTED[path.name]:
        assert text in run["stdout"], f"{path.name} did not print {text!r}:\n{run['stdout'][-4000:]}"
    if path.name == "wandb_logging.py":  # the run it wrote holds every quantity the logger promises
        folder = run["stdout"].split("offline run in ", 1)[1].split(";", 1)[0]
        logged = read_offline_run(folder)
        assert logged.complete and not [key for key in LOGGED if key not in logged.keys()]
    if path.name == "resume_from_checkpoint.py":
        assert (base / path.stem / "mind-glyphs.pt").is_file()
        # Two runs from the two resume processes, one from wandb_logging.py.
        assert len(list((base / "wandb" / "wandb").glob("offline-run-*"))) >= 3
