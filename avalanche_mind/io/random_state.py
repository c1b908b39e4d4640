"""The random states a run continues from, and evaluation that leaves them untouched.

Evaluation draws from torch's global generator (every data loader takes a seed).
If it were allowed to, a run that evaluates between experiences would train
differently from one that does not, and a run resumed from a checkpoint written
before an interrupted evaluation would not continue exactly. So MIND evaluates
inside :func:`training_rng_kept`, and a checkpoint written during an evaluation
stores the states training continues from.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Mapping

import numpy as np
import torch


def rng_state() -> Dict[str, Any]:
    """The torch, CUDA, numpy and Python random states, as tensors and plain values."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "has_gauss": py_gauss is not None,
            "gauss_next": float(py_gauss) if py_gauss is not None else 0.0,
        },
        "cuda": [],
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["cached_gaussian"]),
        )
    )
    py = state["python"]
    gauss_next = py["gauss_next"] if py["has_gauss"] else None
    random.setstate((int(py["version"]), tuple(int(v) for v in py["internal"].tolist()), gauss_next))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


@contextmanager
def training_rng_kept(strategy: Any) -> Iterator[None]:
    """Restore torch's (and the strategy's CUDA device's) random state on exit; nested uses do nothing."""
    if getattr(strategy, "training_rng", None) is not None:
        yield
        return
    cuda = torch.device(strategy.device).type == "cuda"
    strategy.training_rng = {"torch": torch.get_rng_state(), "cuda": list(torch.cuda.get_rng_state_all()) if cuda else []}
    try:
        yield
    finally:
        torch.set_rng_state(strategy.training_rng["torch"])
        if cuda:
            torch.cuda.set_rng_state_all(strategy.training_rng["cuda"])
        strategy.training_rng = None


def training_rng_state(strategy: Any) -> Dict[str, Any]:
    """:func:`rng_state`, with training's torch states when called during an evaluation."""
    state = rng_state()
    kept = getattr(strategy, "training_rng", None)
    if kept is not None:
        state.update({k: v for k, v in kept.items() if k == "torch" or v})
    return state


__all__ = ["rng_state", "set_rng_state", "training_rng_kept", "training_rng_state"]
