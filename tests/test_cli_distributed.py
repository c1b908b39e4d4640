"""``avalanche-mind train`` under torchrun: two gloo ranks on CPU, rank 0 alone prints and writes the results."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def test_train_under_torchrun_writes_the_results_once(tmp_path):
    results = tmp_path / "results.json"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "avalanche_mind.cli", "train", "--benchmark", "toy",
        "--benchmark-arg", "n_experiences=2", "--benchmark-arg", "classes_per_experience=2",
        "--benchmark-arg", "per_class=16", "--benchmark-arg", "test_per_class=8",
        "--model", "small_cnn", "--model-arg", "width=4", "--teacher-epochs", "1", "--epochs", "1",
        "--teacher-milestones", "none", "--milestones", "none", "--batch-size", "8", "--results", str(results),
    ]
    done = subprocess.run(command, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # Rank 0 alone prints: one line per experience and one final line.
    assert [line.startswith("[1/2]") for line in done.stdout.splitlines()].count(True) == 1, done.stdout
    assert [line.startswith("final:") for line in done.stdout.splitlines()].count(True) == 1, done.stdout
    written = json.loads(results.read_text())
    assert written["record"]["world_size"] == 2
    assert set(written["final"]) >= {"TAg", "TAw", "TaskId"}
    assert all(0.0 <= value <= 1.0 for value in written["final"].values())
