"""The state of an Avalanche evaluator (its metrics and avalanche-mind's loggers) as plain values.

Avalanche's metrics keep state across experiences (forgetting remembers each
experience's first accuracy) but have no ``state_dict``; a checkpoint that must
resume exactly needs it, and must never pickle objects (reading one would run code).
"""
from __future__ import annotations

import collections
from typing import Any, Dict, List, Mapping

import torch
from torch import Tensor, nn

# Avalanche's metrics keep state across experiences (forgetting remembers each
# experience's first accuracy). It is saved generically: the plain attributes of
# each metric object (numbers, strings, tensors, and dicts/lists/Avalanche objects
# made of them), restored into the same metric classes of the resumed strategy.
_PLAIN = (bool, int, float, str, type(None))
_SKIP = object()
_STATE_MODULES = ("avalanche.", "avalanche_mind.")


def _class_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _encode_state(value: Any, depth: int) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, (list, tuple)):
        items = [_encode_state(v, depth) for v in value]
        return _SKIP if any(i is _SKIP for i in items) else items
    if isinstance(value, Mapping):
        if not all(isinstance(k, (int, str)) and not isinstance(k, bool) for k in value):
            return _SKIP
        out = {}
        for key, item in value.items():
            encoded = _encode_state(item, depth)
            if encoded is _SKIP:
                return _SKIP
            out[key] = encoded
        return out
    if isinstance(value, (nn.Module, torch.utils.data.Dataset)):
        return _SKIP  # models and datasets are not metric state
    if depth < 4 and hasattr(value, "__dict__") and type(value).__module__.startswith(_STATE_MODULES):
        return _object_state(value, depth + 1)
    return _SKIP


def _object_state(obj: Any, depth: int = 0) -> Dict[str, Any]:
    attrs = {}
    for key, value in vars(obj).items():
        encoded = _encode_state(value, depth)
        if encoded is not _SKIP:
            attrs[key] = encoded
    return {"__class__": _class_name(obj), "__attrs__": attrs}


def _is_object_state(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"__class__", "__attrs__"}


def _restore_object(obj: Any, state: Mapping[str, Any]) -> bool:
    if obj is None or _class_name(obj) != state["__class__"]:
        return False
    for key, encoded in state["__attrs__"].items():
        decoded = _decode_state(encoded, getattr(obj, key, None))
        if decoded is not _SKIP:
            setattr(obj, key, decoded)
    return True


def _decode_state(encoded: Any, current: Any) -> Any:
    if _is_object_state(encoded):
        return current if _restore_object(current, encoded) else _SKIP
    if isinstance(encoded, list):
        same_shape = isinstance(current, (list, tuple)) and len(current) == len(encoded)
        currents = list(current) if same_shape else [None] * len(encoded)
        items = [_decode_state(e, c) for e, c in zip(encoded, currents)]
        if any(i is _SKIP for i in items):
            return _SKIP
        return tuple(items) if isinstance(current, tuple) else items
    if isinstance(encoded, dict):
        rebuilt = (
            collections.defaultdict(current.default_factory)
            if isinstance(current, collections.defaultdict)
            else type(current)() if isinstance(current, dict) else {}
        )
        for key, item in encoded.items():
            existing = current.get(key) if isinstance(current, dict) else None
            if existing is None and _is_object_state(item) and isinstance(rebuilt, collections.defaultdict):
                existing = rebuilt[key]  # the factory builds an empty object to restore into
            decoded = _decode_state(item, existing)
            if decoded is not _SKIP:
                rebuilt[key] = decoded
        return rebuilt
    return encoded


def evaluator_state(evaluator) -> Dict[str, Any]:
    """The metric objects' state, the last and all results, and avalanche-mind loggers' state."""
    if evaluator is None:
        return {}
    plain_results = {
        k: v for k, v in getattr(evaluator, "last_metric_results", {}).items() if isinstance(v, (int, float))
    }
    history = {}
    for name, (xs, values) in getattr(evaluator, "all_metric_results", {}).items():
        if all(isinstance(v, (int, float)) for v in values):
            history[name] = [list(map(int, xs)), list(values)]
    return {
        "metrics": [_object_state(m) for m in evaluator.metrics],
        "last_metric_results": plain_results,
        "all_metric_results": history,
        "loggers": [
            logger.state_dict() if hasattr(logger, "state_dict") and _class_name(logger).startswith("avalanche_mind.")
            else None
            for logger in evaluator.loggers
        ],
    }


def restore_evaluator(evaluator, state: Mapping[str, Any]) -> List[str]:
    """Put the saved metric and logger state back into ``evaluator``; returns what could not be restored."""
    if evaluator is None or not state:
        return []
    skipped = []
    saved_metrics = state.get("metrics", [])
    if [m["__class__"] for m in saved_metrics] == [_class_name(m) for m in evaluator.metrics]:
        for metric, metric_state in zip(evaluator.metrics, saved_metrics):
            _restore_object(metric, metric_state)
    else:
        skipped.append("metrics (the evaluator has other metrics than the checkpointed run)")
    evaluator.last_metric_results.update(state.get("last_metric_results", {}))
    if isinstance(getattr(evaluator, "all_metric_results", None), dict):
        for name, (xs, values) in state.get("all_metric_results", {}).items():
            evaluator.all_metric_results[name] = (list(xs), list(values))
    saved_loggers = state.get("loggers", [])
    for logger, logger_state in zip(evaluator.loggers, saved_loggers):
        if logger_state is not None and hasattr(logger, "load_state_dict"):
            logger.load_state_dict(logger_state)
    return skipped


__all__ = ["evaluator_state", "restore_evaluator"]
