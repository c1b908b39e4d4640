"""Inference without a strategy: load a MIND checkpoint into a model and predict.

::

    predictor = Predictor.from_checkpoint("mind.pt", gresnet32(num_classes=100))
    out = predictor.predict(images)          # task-agnostic: out.classes, out.tasks
    out = predictor.predict(images, task=3)  # task-aware: sub-network of task 3

The user supplies the architecture (it is not pickled in the checkpoint); every
tensor name and shape is checked against the checkpoint, and the file's digest is
verified, so a wrong model or a damaged file raises
:class:`~avalanche_mind.io.checkpoint.CheckpointError` instead of predicting nonsense.
Inference itself is :mod:`avalanche_mind.inference.bank` (the same code the strategy's
evaluation runs).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from avalanche_mind.core.config import DEFAULTS, MINDConfig
from avalanche_mind.core.layers import gate_model, gated_layers
from avalanche_mind.core.ownership import Capacity, OwnershipMap, set_owner_dtype
from avalanche_mind.core.state import MINDState
from avalanche_mind.inference.bank import SubnetworkBank, predict
from avalanche_mind.io.checkpoint import CheckpointError, read_checkpoint
from avalanche_mind.io.strategy_state import check_consistency, check_model_matches, to_device
from avalanche_mind.task_id.rules import STATISTICS_RULES

TaskArg = Union[None, int, Sequence[int], Tensor]


@dataclass
class PredictorOutput:
    """Predicted class ids and the task (sub-network) that produced each prediction."""

    classes: Tensor
    tasks: Tensor
    """For task-agnostic prediction, the task chosen by task inference; else the given task."""


class Predictor:
    """MIND's task-aware and task-agnostic inference on a trained model, without a strategy.

    Its settings mean what MIND's do and default to what MIND's do
    (:class:`~avalanche_mind.core.config.MINDConfig`, which also validates them), so a
    Predictor built on a strategy's state with no settings infers as that strategy
    does with its defaults. :meth:`from_checkpoint` instead takes the checkpoint's own
    settings, of which ``temperature`` and ``task_inference`` may be overridden.
    """

    def __init__(
        self,
        model: nn.Module,
        state: MINDState,
        *,
        n_experiences: int,
        capacity: Capacity = DEFAULTS["capacity"],
        weight_sharing: bool = DEFAULTS["weight_sharing"],
        temperature: float = DEFAULTS["temperature"],
        task_inference: str = DEFAULTS["task_inference"],
        device: Union[str, torch.device] = "cpu",
        bank_options: Optional[Dict[str, object]] = None,
    ) -> None:
        if state.n_tasks == 0:
            raise ValueError("the model has not been trained on any experience: nothing to predict with")
        config = MINDConfig(n_experiences=n_experiences, capacity=capacity, weight_sharing=weight_sharing,
                            temperature=temperature, task_inference=task_inference)  # validated as MIND's
        if task_inference in STATISTICS_RULES and not state.score_statistics.complete(state.n_tasks):
            raise ValueError(
                f"task_inference={task_inference!r} needs score statistics of every task, and this state has "
                "none (saved before they existed, or mid-experience): use task_inference='max_confidence'"
            )
        self.device = torch.device(device)
        self.hyperparameters: Dict[str, object] = {}
        """The trained strategy's settings (filled by :meth:`from_checkpoint`)."""
        self.extra: Dict[str, object] = {}
        """What the training script stored beside the state (e.g. benchmark and model names)."""
        self.model = model.to(self.device).eval()
        self.state = state
        self.ownership = OwnershipMap(self.model, n_experiences, capacity)
        self.weight_sharing = config.weight_sharing
        self.temperature = config.temperature
        self.task_inference = config.task_inference
        self.slices: List[Tensor] = [torch.tensor(s, dtype=torch.long, device=self.device) for s in state.slices]
        snapshots = [to_device(s, self.device) for s in state.bn_snapshots]
        self.bank = SubnetworkBank(
            self.model, self.ownership, snapshots, state.n_tasks, weight_sharing, **dict(bank_options or {})
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: Union[str, os.PathLike],
        model: nn.Module,
        *,
        device: Union[str, torch.device] = "cpu",
        temperature: Optional[float] = None,
        task_inference: Optional[str] = None,
        bank_options: Optional[Dict[str, object]] = None,
    ) -> "Predictor":
        """Load ``path`` (written by :func:`~avalanche_mind.io.checkpoint.save_checkpoint`) into ``model``.

        ``model`` must be built exactly as the trained one (e.g.
        ``gresnet32(num_classes=100)``); it is gated in place if it is not yet.
        ``temperature`` and ``task_inference``: None (the default) takes the trained
        strategy's, as its ``eval`` would; the other settings are always the checkpoint's.
        ``bank_options`` are passed to :class:`~avalanche_mind.inference.bank.SubnetworkBank`.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        checkpoint = read_checkpoint(path)
        body = checkpoint.body
        if next(gated_layers(model), None) is None:
            gate_model(model)
        check_model_matches(body["model_signature"], model, path)
        check_consistency(body, path)
        if checkpoint.n_trained == 0:
            raise CheckpointError(f"{path} was saved before any experience was trained: it has no sub-network")
        state = MINDState()
        state.load_state_dict(body["mind_state"])
        if len(state.bn_snapshots) != state.n_tasks:
            raise CheckpointError(f"{path} was saved in the middle of an experience (no BatchNorm snapshot for it)")
        hyper = body["hyperparameters"]
        # The owners must be wide enough before loading: a fresh gated model's are int8.
        set_owner_dtype(model, int(hyper["n_experiences"]))
        model.load_state_dict(body["model"], strict=True)
        predictor = cls(
            model,
            state,
            n_experiences=int(hyper["n_experiences"]),
            capacity=hyper["capacity"],
            weight_sharing=bool(hyper["weight_sharing"]),
            temperature=temperature if temperature is not None else hyper["temperature"],
            task_inference=task_inference if task_inference is not None else hyper["task_inference"],
            device=device,
            bank_options=bank_options,
        )
        predictor.hyperparameters = dict(hyper)
        predictor.extra = checkpoint.extra
        return predictor

    @property
    def n_tasks(self) -> int:
        return self.state.n_tasks

    def task_of_experience(self, experience_id: int) -> int:
        """The task id (training order) of a stream experience id, or -1 if it was never trained."""
        return self.state.task_of_experience(experience_id)

    def _check_task(self, task: int) -> int:
        if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < self.n_tasks:
            raise ValueError(f"task must be an int in [0, {self.n_tasks - 1}] (tasks trained), got {task!r}")
        return task

    @torch.no_grad()
    def predict(self, x: Tensor, task: TaskArg = None) -> PredictorOutput:
        """Predict a batch.

        ``task=None``: task-agnostic (TAg) — every sub-network runs and task
        inference picks one per input. ``task=t`` (int): task-aware (TAw) with
        sub-network ``t`` and its output slice. A sequence/tensor of task ids
        gives each input its own task.
        """
        x = self._check_input(x)
        if task is None:
            out = predict(self.bank, x, self.slices, self.temperature, self.task_inference,
                          statistics=self.state.score_statistics)
            _check_output(out.output, x)
            return PredictorOutput(out.tag_class, out.task)
        if isinstance(task, int) and not isinstance(task, bool):
            t = self._check_task(task)
            logits = _check_output(self.bank.logits(x, t)[:, self.slices[t]], x)
            classes = self.slices[t][logits.argmax(dim=1)]
            return PredictorOutput(classes, torch.full_like(classes, t))
        if isinstance(task, (float, bool, str)):
            self._check_task(task)  # raises: not an int
        tasks = torch.as_tensor(task, device=self.device).view(-1)
        if tasks.is_floating_point() or tasks.is_complex() or tasks.dtype == torch.bool:
            raise ValueError(f"task ids must be integers, got a tensor of {tasks.dtype}")
        tasks = tasks.long()
        if tasks.numel() != x.shape[0]:
            raise ValueError(f"got {tasks.numel()} task ids for {x.shape[0]} inputs")
        classes = torch.empty(x.shape[0], dtype=torch.long, device=self.device)
        for t in tasks.unique().tolist():
            rows = tasks == t
            classes[rows] = self.predict(x[rows], int(t)).classes
        return PredictorOutput(classes, tasks)

    @torch.no_grad()
    def logits(self, x: Tensor, task: int) -> Tensor:
        """Full-width logits of sub-network ``task`` (its own BatchNorm snapshot)."""
        x = self._check_input(x)
        return _check_output(self.bank.logits(x, self._check_task(task)), x)

    def _check_input(self, x) -> Tensor:
        """``x`` on the device; ValueError for a missing batch dimension or NaN/infinite values."""
        if not isinstance(x, Tensor):
            raise TypeError(f"inputs must be a torch.Tensor batch, got {type(x).__name__}")
        first = next(iter(self.ownership.layers.values()), None)
        expected = 4 if isinstance(first, nn.Conv2d) else 2 if isinstance(first, nn.Linear) else None
        if expected is not None and x.dim() == expected - 1:
            raise ValueError(
                f"inputs must be a batch with {expected} dimensions (N first), got one sample of shape "
                f"{list(x.shape)}: add the batch dimension, e.g. x.unsqueeze(0)"
            )
        if not x.is_floating_point():
            raise ValueError(f"inputs must be floating point, scaled as the training data, got {x.dtype}: "
                             "convert them, e.g. x.float() / 255 for 8-bit images")
        channels = (first.in_channels if isinstance(first, nn.Conv2d) else
                    first.in_features if isinstance(first, nn.Linear) else None)
        if channels is not None and x.dim() == expected and x.shape[1] != channels:
            kind = "channels" if isinstance(first, nn.Conv2d) else "features"
            raise ValueError(f"inputs have {x.shape[1]} {kind} (shape {list(x.shape)}), the model's first layer "
                             f"takes {channels}: give inputs shaped as the training data")
        if x.is_floating_point():
            bad = int((~torch.isfinite(x)).sum())
            if bad:
                raise ValueError(f"inputs hold {bad} NaN or infinite value(s) (of {x.numel()}): every prediction "
                                 "would be meaningless; clean or drop those inputs")
        return x.to(self.device)

    def evaluate(self, dataset, batch_size: int = 512, experience_id: Optional[int] = None) -> Dict[str, float]:
        """TAg, TAw and task-identification accuracy on ``dataset`` (items ``(x, y, ...)``).

        ``experience_id``: the stream experience the data comes from, for TAw and
        TaskId (omitted or untrained: only TAg is reported).
        """
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
        task = self.task_of_experience(experience_id) if experience_id is not None else -1
        counts = {"TAg": 0, "TAw": 0, "TaskId": 0}
        total = 0
        for batch in loader:
            x, y = batch[0], batch[1].to(self.device)
            tag = self.predict(x)
            counts["TAg"] += int((tag.classes == y).sum())
            if task >= 0:
                counts["TAw"] += int((self.predict(x, task).classes == y).sum())
                counts["TaskId"] += int((tag.tasks == task).sum())
            total += len(y)
        keys = ("TAg", "TAw", "TaskId") if task >= 0 else ("TAg",)
        return {k: counts[k] / max(total, 1) for k in keys}


def _check_output(values: Tensor, x: Tensor) -> Tensor:
    """``values``, or ValueError when inputs far outside the training range made them NaN or infinite."""
    bad = ~torch.isfinite(values).flatten(1).all(dim=1)
    if bool(bad.any()):
        largest = float(x.detach().abs().amax()) if x.numel() else 0.0
        raise ValueError(f"the model's outputs are NaN or infinite for {int(bad.sum())} of {len(bad)} input(s) "
                         f"(largest |input| {largest:.3g}): inputs far outside the training data's range give no "
                         "prediction; scale them as the training data was")
    return values


__all__ = ["Predictor", "PredictorOutput"]
