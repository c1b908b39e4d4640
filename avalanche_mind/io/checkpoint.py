"""Checkpoint files for MIND: atomic writes, a digest, and nothing but tensors and plain values.

A checkpoint is ``MIND.state_dict()`` (see :mod:`avalanche_mind.io.strategy_state`:
configuration, weights with the ownership map, MIND's state, optimiser, scheduler,
allocation generator, clock, evaluator state) plus the torch / CUDA / numpy /
Python random states and the caller's ``extra`` values, under a ``sha256`` digest:
a bit flipped in a tensor (which ``torch.load`` does not notice) is reported, never
loaded. It is opened with ``torch.load(..., weights_only=True)``, so reading one
never executes anything. (Avalanche's own ``avalanche.checkpointing.save_checkpoint``
pickles the whole strategy, which fails here with a ``PicklingError`` on a
typing_extensions sentinel, upstream issue #1680, and loading a pickle runs code.)

Writes are atomic: a temporary file in the destination folder, flushed and
fsynced, then ``os.replace``; an interrupted save leaves the previous checkpoint.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Union

import torch
from avalanche.core import SupervisedPlugin
from torch import Tensor

from avalanche_mind.core.distributed import is_main_process
from avalanche_mind.errors import CheckpointError
from avalanche_mind.io.random_state import set_rng_state, training_rng_state
from avalanche_mind.io.strategy_state import check_model_matches, plain

if TYPE_CHECKING:
    from avalanche_mind.core.strategy import MIND

PathLike = Union[str, os.PathLike]

FORMAT = "avalanche-mind-checkpoint"
FORMAT_VERSION = 1


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


def mind_hyperparameters(strategy: "MIND") -> Dict[str, Any]:
    """MIND's configuration as plain values (what checkpoints store and W&B logs as the run's config)."""
    return strategy.config.to_dict()


def checkpoint_payload(strategy: "MIND", extra: Optional[Mapping[str, Any]] = None,
                       evaluation_pending: bool = False) -> Dict[str, Any]:
    """Everything :func:`save_checkpoint` writes: ``strategy.state_dict()``, the random states and ``extra``."""
    body = {**strategy.state_dict(), "rng": training_rng_state(strategy), "extra": plain(dict(extra or {})),
            "evaluation_pending": bool(evaluation_pending)}
    return {"format": FORMAT, "version": FORMAT_VERSION, "digest": _digest(body), "body": body}


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


def _os_error(error: BaseException):
    """The OSError behind ``error`` (itself, or what it was raised while handling), or None."""
    for _ in range(4):
        if error is None or isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None


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
    except (OSError, RuntimeError) as error:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error(error)  # torch.save may turn a full disk (or ulimit -f) into a RuntimeError
        if cause is None:
            raise
        if cause is not error or error.filename is None:  # say which file it was
            raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from error
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    remove_stale_temporaries(path)
    return path


def save_checkpoint(strategy: "MIND", path: PathLike, extra: Optional[Mapping[str, Any]] = None, *,
                    evaluation_pending: bool = False) -> Path:
    """Save MIND's whole state to ``path`` atomically; returns the path.

    ``extra``: plain values (str, numbers, lists, dicts) stored beside the state,
    for example how to rebuild the benchmark and model; :func:`read_checkpoint`
    gives them back. (Avalanche's own ``avalanche.checkpointing.save_checkpoint`` cannot
    be used: it pickles the strategy and fails with a ``PicklingError``, upstream
    issue #1680.)
    ``evaluation_pending``: saved after training, before the evaluation that follows it
    completed; a resumed run repeats that evaluation (its metrics, forgetting's first
    accuracies among them, are in no checkpoint yet).
    """
    return atomic_torch_save(checkpoint_payload(strategy, extra, evaluation_pending), path)


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

    @property
    def evaluation_pending(self) -> bool:
        """Saved after training but before the evaluation that followed it completed (see :class:`CheckpointPlugin`)."""
        return bool(self.body.get("evaluation_pending", False))


_BODY = {"hyperparameters": Mapping, "n_trained": int, "model_signature": Mapping, "model": Mapping,
         "mind_state": Mapping, "optimizer": Mapping, "scheduler": (Mapping, type(None)), "generator": Tensor,
         "clock": Mapping, "rng": Mapping}
_MIND_STATE = {"slices": list, "experience_ids": list, "bn_snapshots": (Mapping, list)}


def _missing(values: Mapping[str, Any], kinds: Mapping[str, Any], prefix: str = "") -> List[str]:
    return [f"{prefix}{key}" for key, kind in kinds.items() if not isinstance(values.get(key), kind)]


def _check_body(body: Mapping[str, Any], path: Path) -> None:
    """CheckpointError for a body that lacks what loading reads: another version's file, or a hand edit."""
    problems = _missing(body, _BODY)
    state = body.get("mind_state")
    if isinstance(state, Mapping):
        problems += _missing(state, _MIND_STATE, "mind_state.")
        if isinstance(state.get("bn_snapshots"), Mapping):
            problems += _missing(state, {"n_bn_snapshots": int}, "mind_state.")
    hyper = body.get("hyperparameters")
    if isinstance(hyper, Mapping):
        problems += [f"hyperparameters.{key}" for key in ("n_experiences", "capacity", "weight_sharing",
                                                            "temperature", "task_inference") if key not in hyper]
    if problems:
        raise CheckpointError(
            f"{path} lacks entries this avalanche-mind reads, or holds them with another type: "
            f"{', '.join(problems[:6])}{' ...' if len(problems) > 6 else ''} (written by another version, or "
            "edited); use a checkpoint written by this version's `avalanche-mind train` or save_checkpoint")


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
    _check_body(body, path)
    return Checkpoint(path, body)


def load_checkpoint(
    strategy: "MIND", path: PathLike, *, strict: bool = True, restore_rng: bool = True
) -> Checkpoint:
    """Restore a checkpoint into a freshly built MIND with the same configuration.

    Reads and verifies the file, then ``strategy.load_state_dict`` puts back the
    weights and ownership map, MIND's state, optimizer, scheduler, allocation
    generator, clock and evaluator state; with ``restore_rng`` also the global random
    states, so training the remaining experiences gives exactly what the
    uninterrupted run would have. Raises :class:`CheckpointError` (a ``ValueError``)
    when the file is corrupt, or when the model's tensors/shapes or MIND's settings
    differ from the checkpoint's; with ``strict=False`` only the settings that
    define the saved weights' meaning (n_experiences, capacity, self_distillation,
    weight_sharing, bn_per_task) must match. Inference settings (temperature,
    task_inference, eval_mb_size) always come from ``strategy``.
    """
    checkpoint = read_checkpoint(path)
    strategy.load_state_dict(checkpoint.body, strict=strict, source=checkpoint.path)
    if restore_rng:
        set_rng_state(checkpoint.body["rng"])
    return checkpoint


class CheckpointPlugin(SupervisedPlugin, supports_distributed=True):
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

    def _save(self, strategy: "MIND", evaluation_pending: bool) -> None:
        if is_main_process():  # under torchrun every rank holds the same state: rank 0 writes it
            self.last_saved = save_checkpoint(strategy, self._target(strategy), self.extra,
                                              evaluation_pending=evaluation_pending)
        self._saved_n_tasks = strategy.state.n_tasks

    def before_training(self, strategy: "MIND", **kwargs) -> None:
        self._in_training = True

    def after_training_exp(self, strategy: "MIND", **kwargs) -> None:
        self._save(strategy, evaluation_pending=True)

    def after_training(self, strategy: "MIND", **kwargs) -> None:
        self._in_training = False
        if self._saved_n_tasks == strategy.state.n_tasks:
            self._save(strategy, evaluation_pending=True)

    def after_eval(self, strategy: "MIND", **kwargs) -> None:
        if not self._in_training and self._saved_n_tasks == strategy.state.n_tasks:
            self._save(strategy, evaluation_pending=False)


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
