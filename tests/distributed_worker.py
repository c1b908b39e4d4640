"""One rank of a data-parallel MIND run (``torchrun --nproc_per_node N``), or the 1-process reference.

Usage: ``python distributed_worker.py OUT_JSON GLOBAL_BATCH [CHECKPOINT [STOP_AFTER]]``. Trains
MIND on a tiny generated stream with a global minibatch of GLOBAL_BATCH (GLOBAL_BATCH /
world size per rank) and writes, from rank 0, every rank's weight digest, whether each
rank kept experience 0's weights bit-identical while training experience 1, and the
final accuracies. With CHECKPOINT: a checkpoint after every experience, resumed from
when it exists; STOP_AFTER=0 stops after experience 0 (a run killed there).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings

import torch
import torch.distributed as dist
from avalanche.training.plugins import EvaluationPlugin

from avalanche_mind import MIND, mind_metrics, small_cnn
from avalanche_mind.io.checkpoint import CheckpointPlugin, load_checkpoint
from avalanche_mind.data.toy import toy_class_incremental
from avalanche_mind.core.distributed import init_from_environment, is_distributed

warnings.filterwarnings("ignore")


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def main(out: str, global_batch: int, checkpoint: str = "", stop_after: int = -1) -> None:
    torch.set_num_threads(1)
    init_from_environment(seed=0)
    world = dist.get_world_size() if is_distributed() else 1
    torch.manual_seed(0)
    benchmark = toy_class_incremental(n_experiences=2, classes_per_experience=4, per_class=40, test_per_class=20,
                                      image_size=12, seed=0)
    strategy = MIND(model=small_cnn(8, width=8), n_experiences=2, seed=0, teacher_epochs=3, train_epochs=3,
                    train_mb_size=global_batch // world, eval_mb_size=64, lr=0.01, teacher_lr=0.01,
                    milestones=[2], teacher_milestones=[2],
                    evaluator=EvaluationPlugin(*mind_metrics(experience=False), loggers=[]),
                    plugins=[CheckpointPlugin(checkpoint)] if checkpoint else [])
    streams = benchmark.train_stream
    if checkpoint and os.path.exists(checkpoint):
        load_checkpoint(strategy, checkpoint)  # every rank reads the file rank 0 wrote
    else:
        strategy.train(streams[0], eval_streams=[])
        if stop_after == 0:
            if is_distributed():
                dist.destroy_process_group()
            return
    first = {name: p.detach().clone() for name, p in strategy.model.named_parameters()}
    owned_by_0 = {name: layer.owner == 0 for name, layer in strategy.ownership.layers.items()}
    strategy.train(streams[1], eval_streams=[])
    isolated = all(
        torch.equal(strategy.model.get_parameter(f"{name}.weight")[mask], first[f"{name}.weight"][mask])
        for name, mask in owned_by_0.items()
    )
    results = strategy.eval(benchmark.test_stream)
    record = {
        "rank": dist.get_rank() if is_distributed() else 0,
        "world": world,
        "digest": digest(strategy.model),
        "isolated": bool(isolated),
        "snapshots": hashlib.sha256(b"".join(v.numpy().tobytes() for s in strategy.state.bn_snapshots
                                             for v in s.values())).hexdigest(),
        "results": {k.split("/")[0]: float(v) for k, v in results.items() if isinstance(v, float)},
    }
    records = [record]
    if is_distributed():
        records = [None] * world
        dist.all_gather_object(records, record)
    if records[0]["rank"] == 0 and (not is_distributed() or dist.get_rank() == 0):
        with open(out, "w") as fh:
            json.dump(records, fh)
    if is_distributed():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *(sys.argv[3:4]), *(int(a) for a in sys.argv[4:5]))
