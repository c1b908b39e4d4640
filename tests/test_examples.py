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

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
EXPECTED = {
    # What each example must print, beside finishing without an exception.
    "avalanche_pipeline.py": ["TAw accuracy on the whole test stream", "TAg accuracy on the whole test stream"],
    "own_model.py": ["after experience 2", "of the weights allocated"],
    "self_distillation.py": ["parameters held", "TAw"],
    "wandb_logging.py": ["teacher/loss: yes", "distillation/loss: yes", "capacity/total: yes",
                         "accuracy_matrix/test/table._type: yes", "accuracy_matrix/test/heatmap._type: yes"],
    "resume_from_checkpoint.py": ["resuming: 1 of 3 experiences already trained", "TAg classes"],
}
# The resume example runs twice, logging to W&B offline: stopped after one experience, then resumed.
WANDB = ["--wandb", "--wandb-mode", "offline"]
ARGS = {p.name: WANDB if p.name == "resume_from_checkpoint.py" else [] for p in EXAMPLES}
RUNS = [(p, ["--stop-after", "1", *ARGS[p.name]]) for p in EXAMPLES if p.name == "resume_from_checkpoint.py"] + [
    (p, ARGS[p.name]) for p in EXAMPLES
]

DRIVER = textwrap.dedent(
    """
    import contextlib, io, json, os, runpy, sys, traceback
    runs, report = json.loads(sys.argv[1]), []
    for path, args, cwd in runs:
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)
        sys.argv = [path, "--small", *args]
        out, status = io.StringIO(), 0
        with contextlib.redirect_stdout(out):
            try:
                runpy.run_path(path, run_name="__main__")
            except SystemExit as exit:
                status = exit.code or 0
            except BaseException:
                status = 1
                traceback.print_exc(file=out)
        report.append({"path": path, "args": args, "status": status, "stdout": out.getvalue()})
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
    for path in EXAMPLES:  # scripts can silence the progress bars
        assert '"--quiet"' in path.read_text() and "verbose=not args.quiet" in path.read_text(), path.name


def test_pipeline_example_is_a_short_avalanche_pipeline():
    text = (ROOT / "examples" / "avalanche_pipeline.py").read_text()
    pipeline = text.split("# --- an ordinary Avalanche pipeline", 1)[1].split("\n# ---", 1)[0]
    code = [line for line in pipeline.splitlines()[1:] if line.strip() and not line.lstrip().startswith("#")]
    assert 8 <= len(code) <= 16, len(code)
    assert "strategy = MIND(" in pipeline and "strategy.train(experience)" in pipeline


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path, report):
    runs, base = report
    if path.name == "resume_from_checkpoint.py":
        first = runs[(path.name, ("--stop-after", "1", *ARGS[path.name]))]
        assert first["status"] == 0, first["stdout"]
        assert "stopping after 1 experiences" in first["stdout"]
    run = runs[(path.name, tuple(ARGS[path.name]))]
    assert run["status"] == 0, f"{path.name} failed:\n{run['stdout'][-4000:]}"
    for text in EXPECTED[path.name]:
        assert text in run["stdout"], f"{path.name} did not print {text!r}:\n{run['stdout'][-4000:]}"
    if path.name == "resume_from_checkpoint.py":
        assert (base / path.stem / "mind-glyphs.pt").is_file()
        # Two runs from the two resume processes, one from wandb_logging.py.
        assert len(list((base / "wandb" / "wandb").glob("offline-run-*"))) >= 3
