"""Data-parallel MIND under torchrun (2 gloo processes on CPU) against one process with the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("distributed_worker.py")
GLOBAL_BATCH = 32


def _run(tmp_path: Path, name: str, ranks: int, *extra: str) -> list:
    out = tmp_path / f"{name}.json"
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
                if ranks > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launcher + [str(WORKER), str(out), str(GLOBAL_BATCH), *extra], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()) if out.exists() else []


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    return {"one": _run(tmp, "one", 1), "two": _run(tmp, "two", 2), "tmp": tmp}


def test_both_ranks_keep_isolation_exactly_and_end_identical(runs):
    ranks = runs["two"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 for r in ranks)
    assert all(r["isolated"] for r in ranks)  # experience 0's weights bit-identical while training experience 1
    assert ranks[0]["digest"] == ranks[1]["digest"]  # every weight and buffer, bit for bit
    assert ranks[0]["snapshots"] == ranks[1]["snapshots"]  # BatchNorm snapshots reduced before storing
    assert ranks[0]["results"] == ranks[1]["results"]  # every rank evaluates all the data


def test_accuracy_within_five_points_of_one_process_with_the_same_global_batch(runs):
    one, two = runs["one"][0]["results"], runs["two"][0]["results"]
    for metric in ("Top1_TAg_Acc_Stream", "Top1_TAw_Acc_Stream"):
        assert abs(two[metric] - one[metric]) <= 0.05, (metric, one[metric], two[metric])


def test_resume_under_torchrun_equals_the_uninterrupted_run(runs):
    tmp = runs["tmp"]
    checkpoint = str(tmp / "mind.pt")
    assert _run(tmp, "stopped", 2, checkpoint, "0") == []  # killed after experience 0: rank 0 wrote the file
    assert Path(checkpoint).exists()
    resumed = _run(tmp, "resumed", 2, checkpoint)
    assert [r["digest"] for r in resumed] == [r["digest"] for r in runs["two"]]
    assert resumed[0]["results"] == runs["two"][0]["results"]
