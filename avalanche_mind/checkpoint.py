"""Checkpoint and resume for MIND, built from state dicts and plain tensors.

Why not Avalanche's own ``avalanche.checkpointing.save_checkpoint``: it pickles
the whole strategy object, which fails here with a ``PicklingError`` on a
typing_extensions sentinel (Avalanche upstream issue #1680), and loading a pickle
runs code from the file.
A MIND checkpoint instead holds only tensors, dicts, lists, strings and numbers,
and is opened with ``torch.load(..., weights_only=True)``, so reading one never
executes anything.

What a checkpoint holds (everything a run needs to continue bit-identically):

- ``model``: ``model.state_dict()``, which includes the ownership map (the gated
  layers' ``owner`` buffers, packed two ids per byte by
  :func:`~avalanche_mind.layers.compact_state_dict`; ``load_state_dict`` unpacks
  them) and the live BatchNorm state;
- ``mind_state``: :class:`~avalanche_mind.state.MINDState` (output slices,
  experience ids, BatchNorm snapshots);
- the distillation optimizer and scheduler state dicts;
- the strategy's allocation ``generator`` and the torch / CUDA / numpy / Python
  random states (as tensors and lists of ints);
- the number of experiences trained, Avalanche's clock counters, the state of
  the evaluator's metrics (forgetting remembers each experience's first
  accuracy) and of avalanche-mind's loggers, MIND's hyperparameters, and a
  ``sha256`` digest of all of the above: a bit flipped in a
  tensor (which ``torch.load`` does not notice) is reported, never loaded.

Writes are atomic: a temporary file in the destination folder, flushed and
fsynced, then ``os.replace``; an interrupted save leaves the previous checkpoint.
"""
from __future__ import annotations

import collections
import hashlib
import os
import random
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Union

import numpy as np
import torch
from avalanche.core import SupervisedPlugin
from torch import Tensor, nn

from avalanche_mind.layers import compact_state_dict, unpack_owner
from avalanche_mind.state import snapshot_count

if TYPE_CHECKING:
    from avalanche_mind.strategy import MIND

PathLike = Union[str, os.PathLike]

FORMAT = "avalanche-mind-checkpoint"
FORMAT_VERSION = 1

STRUCTURAL_KEYS = ("n_experiences", "capacity", "self_distillation", "weight_sharing", "bn_per_task")
"""Hyperparameters that define what the saved weights mean: they must always match."""
TRAINING_KEYS = (
    "teacher_epochs",
    "train_epochs",
    "train_mb_size",
    "beta",
    "distill_loss",
    "lr",
    "weight_decay",
    "milestones",
    "teacher_milestones",
    "lr_gamma",
    "optimizer",
    "new_weights",
    "rejection",
    "rejection_weight",
)
"""Hyperparameters that change how later experiences train: checked when ``strict``."""
EVAL_KEYS = ("temperature", "task_inference", "eval_mb_size")
"""Inference-only settings: the strategy being loaded into keeps its own."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, corrupt, or made for another configuration."""


# ------------------------------------------------------------------ configuration
def mind_hyperparameters(strategy: "MIND") -> Dict[str, Any]:
    """MIND's hyperparameters as plain values (also what W&B logs as the run's config)."""
    group = strategy.optimizer.param_groups[0]
    capacity = strategy.ownership.capacity
    return {
        "n_experiences": int(strategy.n_experiences),
        "capacity": capacity if isinstance(capacity, str) else float(capacity),
        "self_distillation": bool(strategy.self_distillation),
        "weight_sharing": bool(strategy.weight_sharing),
        "bn_per_task": bool(strategy.bn_per_task),
        "teacher_epochs": int(strategy.teacher_plugin.epochs),
        "train_epochs": int(strategy.train_epochs),
        "train_mb_size": int(strategy.train_mb_size),
        "eval_mb_size": int(strategy.eval_mb_size),
        "beta": float(strategy.beta),
        "distill_loss": str(strategy.distill_loss_name),
        "temperature": float(strategy.temperature),
        "task_inference": str(strategy.task_inference),
        "lr": float(group.get("initial_lr", group["lr"])),
        "weight_decay": float(group.get("weight_decay", 0.0)),
        "milestones": [int(m) for m in strategy.milestones],
        "teacher_milestones": [int(m) for m in strategy.teacher_plugin.milestones],
        "lr_gamma": float(strategy.lr_gamma),
        "optimizer": type(strategy.optimizer).__name__,
        "new_weights": str(strategy.new_weights),
        "rejection": strategy.rejection,
        "rejection_weight": float(strategy.rejection_weight),
    }


def model_signature(model: nn.Module) -> Dict[str, List[int]]:
    """Name -> shape of every entry of ``model.state_dict()``."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def _describe_differences(saved: Mapping[str, Any], current: Mapping[str, Any], keys) -> List[str]:
    out = []
    for key in keys:
        if key not in saved and key not in current:
            continue
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if a != b:
            out.append(f"{key}: checkpoint has {a!r}, this one has {b!r}")
    return out


def _few(names: List[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def check_model_matches(saved_signature: Mapping[str, List[int]], model: nn.Module, path: PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``model`` has exactly the checkpoint's tensors and shapes."""
    current = model_signature(model)
    problems = []
    missing = [k for k in saved_signature if k not in current]
    unexpected = [k for k in current if k not in saved_signature]
    if missing:
        problems.append(f"tensors in the checkpoint but not in the model: {_few(missing)}")
    if unexpected:
        problems.append(f"tensors in the model but not in the checkpoint: {_few(unexpected)}")
    for key, shape in saved_signature.items():
        if key in current and list(current[key]) != list(shape):
            problems.append(f"{key}: checkpoint shape {list(shape)}, model shape {current[key]}")
    if problems:
        raise CheckpointError(
            f"{path} was saved from a different model architecture: " + "; ".join(problems[:8])
            + ". Build the model exactly as for the run that wrote the checkpoint (same "
            "architecture, num_classes and in_channels)."
        )


# ------------------------------------------------------------------ random states
def _rng_state() -> Dict[str, Any]:
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


def _set_rng_state(state: Mapping[str, Any]) -> None:
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


# ---------------------------------------------------------------- serialisation
def _plain(value: Any) -> Any:
    """Containers turned into dict/list (Counter, tuple, OrderedDict kept as loadable types)."""
    if isinstance(value, collections.Counter):
        return {"__counter__": {int(k): int(v) for k, v in value.items()}}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _scheduler_state(scheduler) -> Optional[Dict[str, Any]]:
    return None if scheduler is None else _plain(scheduler.state_dict())


def _restore_counters(value: Any) -> Any:
    if isinstance(value, Mapping):
        if set(value) == {"__counter__"}:
            return collections.Counter(value["__counter__"])
        return {k: _restore_counters(v) for k, v in value.items()}
    return value


def _digest(value: Any) -> str:
    """sha256 over every tensor's dtype, shape and bytes and every plain value, in a fixed order."""
    h = hashlib.sha256()

    def walk(v: Any) -> None:
        if isinstance(v, Tensor):
            t = v.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{list(v.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(v, Mapping):
            h.update(b"{")
            for k in sorted(v, key=str):
                h.update(f"K{k!r}".encode())
                walk(v[k])
            h.update(b"}")
        elif isinstance(v, (list, tuple)):
            h.update(b"[")
            for item in v:
                walk(item)
            h.update(b"]")
        else:
            h.update(f"V{type(v).__name__}:{v!r}".encode())

    walk(value)
    return h.hexdigest()


def _clock_state(strategy: "MIND") -> Dict[str, int]:
    clock = getattr(strategy, "clock", None)
    if clock is None:
        return {}
    return {
        k: int(getattr(clock, k))
        for k in ("train_iterations", "train_exp_counter", "total_iterations")
        if hasattr(clock, k)
    }


# ------------------------------------------------------------- evaluator state
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


def _evaluator_state(strategy: "MIND") -> Dict[str, Any]:
    evaluator = getattr(strategy, "evaluator", None)
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


def _restore_evaluator(strategy: "MIND", state: Mapping[str, Any]) -> List[str]:
    """Put the saved metric and logger state back; returns what could not be restored."""
    evaluator = getattr(strategy, "evaluator", None)
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


def checkpoint_payload(strategy: "MIND", extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Everything :func:`save_checkpoint` writes, as a dict of plain values and tensors."""
    body = {
        "hyperparameters": mind_hyperparameters(strategy),
        "n_trained": int(strategy.state.n_tasks),
        "model_signature": model_signature(strategy.model),
        "model_class": type(strategy.model).__name__,
        "model": {k: v.detach().cpu().clone() for k, v in compact_state_dict(strategy.model).items()},
        "mind_state": _plain(_to_cpu(strategy.state.state_dict())),  # BN snapshots stacked
        "optimizer": _plain(strategy.optimizer.state_dict()),
        "scheduler": _scheduler_state(getattr(strategy, "scheduler", None)),
        "generator": strategy.generator.get_state(),
        "rng": _rng_state(),
        "clock": _clock_state(strategy),
        "evaluator": _evaluator_state(strategy),
        "extra": _plain(dict(extra or {})),
    }
    # Tensors inside the optimizer state may live on the accelerator: store them on CPU.
    body["optimizer"] = _to_cpu(body["optimizer"])
    return {"format": FORMAT, "version": FORMAT_VERSION, "digest": _digest(body), "body": body}


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, Mapping):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def _to_device(value: Any, device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: PathLike) -> List[Path]:
    """Delete the temporary files that killed saves of ``path`` left beside it; returns them.

    A save writes ``.<name>.pid<PID>.<random>.tmp``: one whose process is gone (or
    that predates the pid in the name) can never be completed, so it is removed.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        middle = tmp.name[len(path.name) + 2:-len(".tmp")]
        pid_part = middle.split(".", 1)[0]
        if pid_part.startswith("pid") and pid_part[3:].isdigit() and _pid_alive(int(pid_part[3:])):
            continue  # a save in progress (this process or a concurrent one)
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then ``os.replace``.

    The file gets the permissions of any file the user creates (0666 less the umask,
    as ``torch.save`` and the glyph cache give), not ``mkstemp``'s private 0600: a
    checkpoint is meant to be evaluated, shared and copied like the run's other
    outputs; a user who wants it private sets a umask (e.g. 077). Temporaries left
    by killed saves of the same file are removed after a successful save.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        if error.filename is None:  # e.g. a full disk inside torch.save: say which file it was
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    remove_stale_temporaries(path)
    return path


def save_checkpoint(strategy: "MIND", path: PathLike, extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Save MIND's whole state to ``path`` atomically; returns the path.

    ``extra``: plain values (str, numbers, lists, dicts) stored beside the state,
    for example how to rebuild the benchmark and model; :func:`read_checkpoint`
    gives them back. (Avalanche's own ``avalanche.checkpointing.save_checkpoint`` cannot
    be used: it pickles the strategy and fails with a ``PicklingError``, upstream
    issue #1680.)
    """
    return atomic_torch_save(checkpoint_payload(strategy, extra), path)


@dataclass
class Checkpoint:
    """A verified checkpoint's contents (see :func:`read_checkpoint`)."""

    path: Path
    body: Dict[str, Any] = field(repr=False)

    @property
    def hyperparameters(self) -> Dict[str, Any]:
        return self.body["hyperparameters"]

    @property
    def n_trained(self) -> int:
        return int(self.body["n_trained"])

    @property
    def extra(self) -> Dict[str, Any]:
        return self.body.get("extra") or {}


def read_checkpoint(path: PathLike) -> Checkpoint:
    """Open and verify a checkpoint (format, version and digest) without touching any strategy."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, unpickling and EOF errors all mean the same to the user
        raise CheckpointError(
            f"{path} is not a readable avalanche-mind checkpoint (truncated or corrupt file, or "
            f"one holding objects other than tensors and plain values): {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not an avalanche-mind checkpoint")
    if payload.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload.get('version')!r}; this avalanche-mind "
            f"reads version {FORMAT_VERSION}"
        )
    body = payload.get("body")
    if not isinstance(body, dict) or _digest(body) != payload.get("digest"):
        raise CheckpointError(
            f"{path} is corrupt: its contents do not match the digest written with them "
            "(the file was altered or damaged after saving)"
        )
    return Checkpoint(path, body)


def check_hyperparameters(saved: Mapping[str, Any], current: Mapping[str, Any], path: PathLike, strict: bool) -> None:
    """Raise :class:`CheckpointError` listing every setting in which the two configurations differ."""
    problems = _describe_differences(saved, current, STRUCTURAL_KEYS)
    if strict:
        problems += _describe_differences(saved, current, TRAINING_KEYS)
    if problems:
        raise CheckpointError(
            f"{path} was saved by MIND with another configuration: "
            + "; ".join(problems)
            + ". Build MIND with the checkpoint's settings"
            + ("" if not strict else " (or pass strict=False to ignore training-only settings)")
            + "."
        )


def _check_state(body: Mapping[str, Any], path: PathLike) -> None:
    state = body["mind_state"]
    n = int(body["n_trained"])
    hyper = body["hyperparameters"]
    if not (len(state["slices"]) == len(state["experience_ids"]) == n):
        raise CheckpointError(f"{path} is inconsistent: {n} experiences trained but {len(state['slices'])} slices")
    try:
        n_snapshots = snapshot_count(state)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} is inconsistent: {error}") from error
    if n_snapshots not in (n, n - 1) or n > int(hyper["n_experiences"]):
        raise CheckpointError(f"{path} is inconsistent: {n_snapshots} BatchNorm snapshots for {n} experiences")
    for key, value in body["model"].items():
        if not key.endswith("owner") or not value.numel():
            continue
        if value.dtype == torch.uint8:  # packed two owners per byte (compact_state_dict)
            try:
                value = unpack_owner(value, tuple(body["model_signature"][key]))
            except (KeyError, ValueError) as error:
                raise CheckpointError(f"{path} is inconsistent: {key} is not a valid packed ownership map") from error
        if int(value.max()) >= max(n, 1):
            raise CheckpointError(f"{path} is inconsistent: {key} names a task >= {n}, the number trained")


def load_checkpoint(
    strategy: "MIND", path: PathLike, *, strict: bool = True, restore_rng: bool = True
) -> Checkpoint:
    """Restore a checkpoint into a freshly built MIND with the same configuration.

    Everything :func:`save_checkpoint` wrote is put back: weights and ownership
    map, MIND's state, optimizer, scheduler, the allocation generator and (with
    ``restore_rng``) the global random states, so training the remaining
    experiences gives exactly what the uninterrupted run would have; the
    evaluator's metric state (e.g. forgetting's first accuracies) and
    avalanche-mind loggers' state are restored when the evaluator has the same
    metrics (otherwise a warning says they start afresh). Raises
    :class:`CheckpointError` (a ``ValueError``) when the file is corrupt, or when
    the model's tensors/shapes or MIND's settings differ from the checkpoint's;
    with ``strict=False`` only the settings that define the saved weights'
    meaning (n_experiences, capacity, self_distillation, weight_sharing,
    bn_per_task) must match. Inference settings (temperature, task_inference,
    eval_mb_size) always come from ``strategy``.
    """
    checkpoint = read_checkpoint(path)
    body = checkpoint.body
    check_hyperparameters(body["hyperparameters"], mind_hyperparameters(strategy), path, strict)
    check_model_matches(body["model_signature"], strategy.model, path)
    _check_state(body, path)

    device = strategy.device
    strategy.model.load_state_dict(body["model"], strict=True)
    strategy.state.load_state_dict(_to_device(dict(body["mind_state"]), device))
    for cache in ("_slice_cache", "_position_cache"):  # per-task lookups derived from the slices
        getattr(strategy, cache, {}).clear()

    from torch.optim.lr_scheduler import MultiStepLR

    try:
        if body["scheduler"] is not None:
            strategy.scheduler = MultiStepLR(
                strategy.optimizer, milestones=strategy.milestones, gamma=strategy.lr_gamma
            )
        strategy.optimizer.load_state_dict(body["optimizer"])
        if body["scheduler"] is not None:
            strategy.scheduler.load_state_dict(_restore_counters(body["scheduler"]))
    except (ValueError, KeyError, RuntimeError) as error:
        raise CheckpointError(f"{path}: the optimizer state does not fit this strategy's optimizer: {error}") from error

    strategy.generator.set_state(body["generator"])
    if restore_rng:
        _set_rng_state(body["rng"])
    clock = getattr(strategy, "clock", None)
    if clock is not None:
        for key, value in body["clock"].items():
            setattr(clock, key, int(value))
        clock.train_exp_counter = checkpoint.n_trained
    skipped = _restore_evaluator(strategy, body.get("evaluator", {}))
    if skipped:
        warnings.warn(f"{path}: not restored: {'; '.join(skipped)}; metrics that span experiences "
                      "(forgetting) start afresh", stacklevel=2)
    if checkpoint.n_trained > 0:
        # Leave the gates where the uninterrupted run leaves them: on the last task.
        strategy.ownership.activate(checkpoint.n_trained - 1, strategy.weight_sharing)
    return checkpoint


class CheckpointPlugin(SupervisedPlugin):
    """Saves MIND's whole state to ``path`` after every training experience.

    The file is written at ``after_training_exp`` (so a crash later loses nothing
    trained) and refreshed at the end of the ``train()`` call and of every
    top-level ``eval()`` that follows: the random generators in it are then those
    the uninterrupted run continues with, so a run resumed from it reproduces the
    uninterrupted run exactly. ``path`` may contain ``{experience}`` to keep one
    file per experience (the index of the last one trained).
    """

    def __init__(self, path: PathLike, extra: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        self.path = str(path)
        self.extra = dict(extra or {})
        self.last_saved: Optional[Path] = None
        self._saved_n_tasks = -1
        self._in_training = False

    def _target(self, strategy: "MIND") -> Path:
        return Path(self.path.replace("{experience}", str(strategy.state.n_tasks - 1)))

    def _save(self, strategy: "MIND") -> None:
        self.last_saved = save_checkpoint(strategy, self._target(strategy), self.extra)
        self._saved_n_tasks = strategy.state.n_tasks

    def before_training(self, strategy: "MIND", **kwargs) -> None:
        self._in_training = True

    def after_training_exp(self, strategy: "MIND", **kwargs) -> None:
        self._save(strategy)

    def after_training(self, strategy: "MIND", **kwargs) -> None:
        self._in_training = False
        if self._saved_n_tasks == strategy.state.n_tasks:
            self._save(strategy)

    def after_eval(self, strategy: "MIND", **kwargs) -> None:
        if not self._in_training and self._saved_n_tasks == strategy.state.n_tasks:
            self._save(strategy)


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointPlugin",
    "check_model_matches",
    "load_checkpoint",
    "mind_hyperparameters",
    "read_checkpoint",
    "save_checkpoint",
]
