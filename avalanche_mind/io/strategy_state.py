"""What a MIND strategy must remember, as tensors and plain values: ``MIND.state_dict()`` and its inverse.

The state holds the configuration (:class:`~avalanche_mind.core.config.MINDConfig`), the
weights with the ownership map (the gated layers' ``owner`` buffers, packed two ids
per byte by :func:`~avalanche_mind.core.layers.compact_state_dict`), :class:`MINDState`
(slices, experience ids, BatchNorm snapshots, score statistics), the distillation
optimiser and scheduler, the allocation generator, Avalanche's clock counters and
the evaluator's metric state. Restoring it checks first that it fits: the same
structural (and, when strict, training) settings, the same tensors and shapes, and
an internally consistent state; anything else is refused with the reason.
"""
from __future__ import annotations

import collections
from typing import Any, Dict, List, Mapping

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import MultiStepLR

from avalanche_mind.core.layers import compact_state_dict, unpack_owner
from avalanche_mind.core.state import snapshot_count
from avalanche_mind.errors import CheckpointError, few
from avalanche_mind.io.evaluator_state import evaluator_state, restore_evaluator

_CLOCK_KEYS = ("train_iterations", "train_exp_counter", "total_iterations")


# ------------------------------------------------------------------ plain values
def plain(value: Any) -> Any:
    """Containers turned into dict/list (a Counter kept as a loadable marker)."""
    if isinstance(value, collections.Counter):
        return {"__counter__": {int(k): int(v) for k, v in value.items()}}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _restore_counters(value: Any) -> Any:
    if isinstance(value, Mapping):
        if set(value) == {"__counter__"}:
            return collections.Counter(value["__counter__"])
        return {k: _restore_counters(v) for k, v in value.items()}
    return value


def to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, Mapping):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_cpu(v) for v in value]
    return value


def to_device(value: Any, device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    return value


# ------------------------------------------------------------------ checks
def model_signature(model: nn.Module) -> Dict[str, List[int]]:
    """Name -> shape of every entry of ``model.state_dict()``."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def check_model_matches(saved_signature: Mapping[str, List[int]], model: nn.Module, source: Any) -> None:
    """Raise :class:`CheckpointError` unless ``model`` has exactly the saved tensors and shapes."""
    current = model_signature(model)
    problems = []
    missing = [k for k in saved_signature if k not in current]
    unexpected = [k for k in current if k not in saved_signature]
    if missing:
        problems.append(f"tensors in the checkpoint but not in the model: {few(missing)}")
    if unexpected:
        problems.append(f"tensors in the model but not in the checkpoint: {few(unexpected)}")
    for key, shape in saved_signature.items():
        if key in current and list(current[key]) != list(shape):
            problems.append(f"{key}: checkpoint shape {list(shape)}, model shape {current[key]}")
    if problems:
        raise CheckpointError(
            f"{source} was saved from a different model architecture: " + "; ".join(problems[:8])
            + ". Build the model exactly as for the run that wrote the checkpoint (same "
            "architecture, num_classes and in_channels)."
        )


def check_consistency(state: Mapping[str, Any], source: Any) -> None:
    """Raise :class:`CheckpointError` when slices, snapshots and ownership disagree on the tasks trained."""
    mind_state = state["mind_state"]
    n = int(state["n_trained"])
    if not (len(mind_state["slices"]) == len(mind_state["experience_ids"]) == n):
        raise CheckpointError(
            f"{source} is inconsistent: {n} experiences trained but {len(mind_state['slices'])} slices")
    try:
        n_snapshots = snapshot_count(mind_state)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{source} is inconsistent: {error}") from error
    if n_snapshots not in (n, n - 1) or n > int(state["hyperparameters"]["n_experiences"]):
        raise CheckpointError(f"{source} is inconsistent: {n_snapshots} BatchNorm snapshots for {n} experiences")
    for key, value in state["model"].items():
        if not key.endswith("owner") or not value.numel():
            continue
        if value.dtype == torch.uint8:  # packed two owners per byte (compact_state_dict)
            try:
                value = unpack_owner(value, tuple(state["model_signature"][key]))
            except (KeyError, ValueError) as error:
                raise CheckpointError(f"{source} is inconsistent: {key} is not a valid packed ownership map") from error
        if int(value.max()) >= max(n, 1):
            raise CheckpointError(f"{source} is inconsistent: {key} names a task >= {n}, the number trained")


# ------------------------------------------------------------------ state
def strategy_state(strategy) -> Dict[str, Any]:
    """``MIND.state_dict()``: everything the strategy must remember, on CPU."""
    clock = getattr(strategy, "clock", None)
    scheduler = getattr(strategy, "scheduler", None)
    return {
        "hyperparameters": strategy.config.to_dict(),
        "n_trained": int(strategy.state.n_tasks),
        "model_signature": model_signature(strategy.model),
        "model_class": type(strategy.model).__name__,
        "model": {k: v.detach().cpu().clone() for k, v in compact_state_dict(strategy.model).items()},
        "mind_state": plain(to_cpu(strategy.state.state_dict())),  # BN snapshots stacked
        # Tensors inside the optimizer state may live on the accelerator: store them on CPU.
        "optimizer": to_cpu(plain(strategy.optimizer.state_dict())),
        "scheduler": None if scheduler is None else plain(scheduler.state_dict()),
        "generator": strategy.generator.get_state(),
        "clock": {} if clock is None else {k: int(getattr(clock, k)) for k in _CLOCK_KEYS if hasattr(clock, k)},
        "evaluator": evaluator_state(getattr(strategy, "evaluator", None)),
    }


def load_strategy_state(strategy, state: Mapping[str, Any], strict: bool, source: Any) -> List[str]:
    """``MIND.load_state_dict()``; returns what of the evaluator could not be restored.

    ``source`` names the state in error messages (a checkpoint's path).
    """
    problems = strategy.config.differences(state["hyperparameters"], strict)
    if problems:
        raise CheckpointError(
            f"{source} was saved by MIND with another configuration: " + "; ".join(problems)
            + ". Build MIND with the checkpoint's settings"
            + ("" if not strict else " (or pass strict=False to ignore training-only settings)") + "."
        )
    check_model_matches(state["model_signature"], strategy.model, source)
    check_consistency(state, source)

    strategy.model.load_state_dict(state["model"], strict=True)
    strategy.state.load_state_dict(to_device(dict(state["mind_state"]), strategy.device))
    try:
        if state["scheduler"] is not None:
            strategy.scheduler = MultiStepLR(
                strategy.optimizer, milestones=list(strategy.config.milestones), gamma=strategy.config.lr_gamma
            )
        strategy.optimizer.load_state_dict(state["optimizer"])
        if state["scheduler"] is not None:
            strategy.scheduler.load_state_dict(_restore_counters(state["scheduler"]))
    except (ValueError, KeyError, RuntimeError) as error:
        raise CheckpointError(f"{source}: the optimizer state does not fit this strategy's optimizer: {error}") from error

    strategy.generator.set_state(state["generator"])
    n_trained = int(state["n_trained"])
    clock = getattr(strategy, "clock", None)
    if clock is not None:
        for key, value in state["clock"].items():
            setattr(clock, key, int(value))
        clock.train_exp_counter = n_trained
    skipped = restore_evaluator(getattr(strategy, "evaluator", None), state.get("evaluator", {}))
    if n_trained > 0:
        # Leave the gates where the uninterrupted run leaves them: on the last task.
        strategy.ownership.activate(n_trained - 1, strategy.config.weight_sharing)
    return skipped


__all__ = [
    "check_consistency",
    "check_model_matches",
    "load_strategy_state",
    "model_signature",
    "strategy_state",
]
