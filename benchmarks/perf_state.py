"""Section ``state`` of ``benchmarks/perf.py``: bytes of a saved MIND state / dense float32 weights.

A saved MIND state is ``model.state_dict()`` + the strategy's
``state.state_dict()``, in the format before issue 5 (int8 owner, one dict per
BatchNorm snapshot) and after (packed owner, stacked snapshots), and the whole
checkpoint file ``save_checkpoint`` writes, without and with AdamW moments.
"""
from __future__ import annotations

import io
from typing import Any, Dict, List

import torch
from avalanche.training.plugins import EvaluationPlugin
from torch import Tensor, nn

from avalanche_mind import MIND
from avalanche_mind.io.checkpoint import checkpoint_payload
from avalanche_mind.core.layers import compact_state_dict
from avalanche_mind.core.ownership import OwnershipMap
from avalanche_mind.core.state import MINDState
from benchmarks.perf_common import dense_twin, model_with_tasks, table
from benchmarks.perf_reference import before_state_payload


def saved_bytes(obj) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


def checkpoint_variants(model, n_tasks: int, state: MINDState) -> Dict[str, Any]:
    """What ``avalanche_mind.io.checkpoint.save_checkpoint`` writes for this model and state."""
    strategy = MIND(model=model, n_experiences=n_tasks, evaluator=EvaluationPlugin(loggers=[]))
    strategy.state.load_state_dict(state.state_dict())
    out = {"after: checkpoint file (save_checkpoint), optimizer state empty": checkpoint_payload(strategy)}
    # After an experience the AdamW moments are there too (two float32 tensors per parameter).
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    strategy.optimizer.step()
    strategy.optimizer.zero_grad(set_to_none=True)
    out["after: checkpoint file (save_checkpoint), with AdamW moments"] = checkpoint_payload(strategy)
    return out


def mind_state(slices: List[Tensor], snapshots: List[Dict[str, Tensor]]) -> MINDState:
    """The strategy's state after ``len(slices)`` experiences."""
    state = MINDState()
    state.slices = [s.tolist() for s in slices]
    state.experience_ids = list(range(len(slices)))
    state.bn_snapshots = snapshots
    return state


def components(ownership: OwnershipMap, snapshots: List[Dict[str, Tensor]], raw: int) -> Dict[str, int]:
    """Raw tensor bytes of the owner maps and BatchNorm snapshots, for the record."""
    owner_bytes = sum(l.owner.numel() * l.owner.element_size() for l in ownership.layers.values())
    snap_bytes = sum(v.numel() * v.element_size() for s in snapshots for v in s.values())
    return {"owner": owner_bytes, "snapshots": snap_bytes, "dense_params": raw}


def state_rows(n_tasks: int) -> List[Dict[str, Any]]:
    model, ownership, snapshots, slices = model_with_tasks(n_tasks)
    dense: nn.Module = dense_twin(model)
    raw = 4 * sum(p.numel() for p in dense.parameters())
    raw_weights = 4 * ownership.n_weights()
    dense_saved = saved_bytes(dense.state_dict())
    state = mind_state(slices, snapshots)
    variants = {
        "before: int8 owner, one dict per snapshot": before_state_payload(model, state, snapshots),
        "after: packed owner (4-bit if T<=15), stacked snapshots": {
            "model": compact_state_dict(model), "state": state.state_dict(),
        },
    }
    variants.update(checkpoint_variants(model, n_tasks, state))
    rows = []
    for name, obj in variants.items():
        size = saved_bytes(obj)
        rows.append({
            "T": n_tasks, "variant": name, "bytes": size,
            "ratio_raw": size / raw, "ratio_saved_dense": size / dense_saved,
            "raw_dense_bytes": raw, "raw_gated_weight_bytes": raw_weights, "saved_dense_bytes": dense_saved,
        })
    rows[-1]["components"] = components(ownership, snapshots, raw)
    return rows


def run_state(args) -> Dict[str, Any]:
    return {"rows": [row for n_tasks in args.state_tasks for row in state_rows(n_tasks)]}


def print_state(res) -> str:
    rows = [[r["T"], r["variant"], r["bytes"], r["ratio_raw"], r["ratio_saved_dense"]] for r in res["rows"]]
    out = table(["T", "saved MIND state", "bytes", "/ raw float32 params", "/ saved dense state_dict"], rows)
    for r in res["rows"]:
        if "components" in r:
            c = r["components"]
            out += (f"\nT={r['T']}: raw owner bytes {c['owner']} ({c['owner'] / c['dense_params']:.3f} of the params),"
                    f" raw BN snapshot bytes {c['snapshots']} ({c['snapshots'] / c['dense_params']:.3f})")
    return out
