"""Task-aware (TAw) and task-agnostic (TAg) inference over MIND's sub-networks.

:class:`SubnetworkBank` builds, once per evaluation, each task's masked weights and
BatchNorm state, so that running a sub-network costs one forward pass of the
network and the model is never copied, per batch or per task. Three ways to run
them, all giving the same logits (up to float rounding):

- ``"module"``: the model itself through ``torch.func.functional_call``, with the
  task's tensors swapped in (works for any model).
- ``"graph"``: the model's forward traced once with ``torch.fx`` and rewritten
  (:mod:`avalanche_mind.inference.tracing`) into a pure function of the input and the
  task's tensors: each BatchNorm that follows a convolution is folded into that
  convolution's (masked) weight and a bias (eval-mode BatchNorm is a per-channel
  affine map), and on CPU the convolutions run in channels-last layout. One pass
  per task, cheaper than a plain forward pass of the dense network.
- ``"batched"``: the traced function vectorised over tasks with
  ``torch.func.vmap`` (stacked weights: grouped convolutions), in chunks of
  ``tasks_per_pass`` tasks. It only pays off where a pass is dominated by
  per-operator overhead (a handful of inputs): on CPU the loop is as fast or faster
  for batches of evaluation size (see the README's Performance section).

``"auto"`` (the default) picks ``"graph"`` when the model can be traced, and
``"module"`` otherwise (for example a forward with data-dependent control flow).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from avalanche_mind.core.layers import batchnorm_modules
from avalanche_mind.core.ownership import OwnershipMap
from avalanche_mind.core.snapshots import per_experience_tensors
from avalanche_mind.inference.tracing import BN_KEYS, Slot, Untraceable, trace_for_tasks
from avalanche_mind.task_id import STATISTICS_RULES, ScoreStatistics, choose_task

BANK_MODES = ("auto", "module", "graph", "batched")

LOG_EPS = math.log(1e-8)
"""Log-probability given, in the full-width TAg output, to classes outside the chosen slice."""


def _batchnorm_tensors(
    model_bns: Dict[str, nn.Module], snapshot: Optional[Dict[str, Tensor]], name: str
) -> Dict[str, Optional[Tensor]]:
    module = model_bns[name]
    out: Dict[str, Optional[Tensor]] = {}
    for key in BN_KEYS:
        value = snapshot.get(f"{name}.{key}") if snapshot is not None else None
        if value is None:
            live = getattr(module, key)
            value = live.detach() if live is not None else None
        out[key] = value
    return out


class SubnetworkBank:
    """Masked weights and BatchNorm state of every trained sub-network, built once.

    :param mode: ``"auto"``, ``"module"``, ``"graph"`` or ``"batched"`` (see the
        module's docstring). ``"graph"``/``"batched"`` fall back to ``"module"`` when
        the model cannot be traced; ``self.mode`` tells which one runs.
    :param fold_batchnorm: fold eval-mode BatchNorm into the preceding convolution
        (graph modes only).
    :param channels_last: run 4-D inputs and convolution weights in channels-last
        layout (graph loop only); ``None``: on CPU only, where oneDNN is faster so.
    :param tasks_per_pass: how many sub-networks one vectorised pass runs (batched
        mode); bounds its activation memory to that many times a plain pass.
    """

    def __init__(
        self,
        model: nn.Module,
        ownership: OwnershipMap,
        bn_snapshots: Sequence[Dict[str, Tensor]],
        n_tasks: int,
        weight_sharing: bool,
        *,
        mode: str = "auto",
        fold_batchnorm: bool = True,
        channels_last: Optional[bool] = None,
        tasks_per_pass: int = 16,
    ) -> None:
        if mode not in BANK_MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {list(BANK_MODES)}")
        if isinstance(tasks_per_pass, bool) or not isinstance(tasks_per_pass, int) or tasks_per_pass < 1:
            raise ValueError(f"tasks_per_pass must be an integer >= 1, got {tasks_per_pass!r}")
        self.model = model
        self.ownership, self.bn_snapshots, self.weight_sharing = ownership, bn_snapshots, weight_sharing
        self.fold_batchnorm = fold_batchnorm
        self._features_fn = None
        self.tasks_per_pass = tasks_per_pass
        self._fn: Optional[Callable[..., Tensor]] = None
        self._slots: List[Slot] = []
        self._stacked: Optional[List[Tensor]] = None
        self.mode = "module"
        if mode != "module":
            try:
                self._fn, self._slots = trace_for_tasks(model, dict(ownership.layers), fold_batchnorm)
                self.mode = "batched" if mode == "batched" else "graph"
            except Untraceable:
                self._fn = None
        device = next(iter(ownership.layers.values())).weight.device
        self.channels_last = (device.type == "cpu") if channels_last is None else bool(channels_last)
        if self.mode != "graph":
            self.channels_last = False

        # Masks of every task: built once, shared by every batch of this evaluation.
        with torch.no_grad():
            self.tasks: List[Dict[str, Tensor]] = []
            self._task_inputs: List[List[Tensor]] = []
            bns = dict(batchnorm_modules(model))
            self._live = per_experience_tensors(model)  # for tasks without a snapshot of a tensor
            for task in range(n_tasks):
                masked = {
                    name: layer.weight.detach() * ownership.subnetwork_mask(layer, task, weight_sharing)
                    for name, layer in ownership.layers.items()
                }
                # A task still being trained (periodic eval) has no snapshot yet: the
                # model's own (live) BatchNorm tensors are used for it.
                snapshot = bn_snapshots[task] if task < len(bn_snapshots) else None
                if self.mode == "module":
                    tensors: Dict[str, Tensor] = {}
                    for name, layer in ownership.layers.items():
                        tensors[f"{name}.weight"] = masked[name]
                        tensors[f"{name}.mask"] = torch.ones((), device=layer.weight.device)
                    if snapshot is not None:
                        tensors.update(snapshot)
                    self.tasks.append(tensors)
                else:
                    named, inputs = self._slot_tensors(ownership, bns, masked, snapshot)
                    self.tasks.append(named)
                    self._task_inputs.append(inputs)
            if self.mode == "batched" and n_tasks:
                self._stacked = [torch.stack(ts) for ts in zip(*self._task_inputs)]
                self._task_inputs = []

    def _slot_tensors(self, ownership, bns, masked, snapshot) -> Tuple[Dict[str, Tensor], List[Tensor]]:
        named: Dict[str, Tensor] = {}
        inputs: List[Tensor] = []
        bn_cache: Dict[str, Dict[str, Optional[Tensor]]] = {}
        live = self._live

        def own(name: str) -> Tensor:  # the task's copy of a per-experience tensor (the live one while it trains)
            return snapshot[name] if snapshot is not None and name in snapshot else live[name].detach()

        for slot in self._slots:
            kind = slot[0]
            if kind == "weight":
                value, name = masked[slot[1]], f"{slot[1]}.weight"
            elif kind == "tensor":
                value, name = own(slot[1]), slot[1]
            elif kind == "bn":
                state = bn_cache.setdefault(slot[1], _batchnorm_tensors(bns, snapshot, slot[1]))
                value, name = state[slot[2]], f"{slot[1]}.{slot[2]}"
            else:
                layer_name, bn_name = slot[1], slot[2]
                state = bn_cache.setdefault(bn_name, _batchnorm_tensors(bns, snapshot, bn_name))
                module = bns[bn_name]
                scale = torch.rsqrt(state["running_var"] + module.eps)
                if state["weight"] is not None:
                    scale = scale * state["weight"]
                if kind == "folded_weight":
                    w = masked[layer_name]
                    value = w * scale.view(-1, *([1] * (w.dim() - 1))).to(w.dtype)
                    name = f"{layer_name}.weight"
                else:
                    bias = None if ownership.layers[layer_name].bias is None else own(f"{layer_name}.bias")
                    centre = -state["running_mean"] if bias is None else bias - state["running_mean"]
                    value = centre * scale
                    if state["bias"] is not None:
                        value = value + state["bias"]
                    name = f"{layer_name}.bias"
            if self.channels_last and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
            named[name] = value
            inputs.append(value)
        return named, inputs

    def __len__(self) -> int:
        return len(self.tasks)

    def _prepare(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def logits(self, x: Tensor, task: int) -> Tensor:
        """Full-width logits of sub-network ``task`` for ``x``."""
        if self.mode == "module":
            return functional_call(self.model, self.tasks[task], (x,))
        if self.mode == "batched":
            return self._fn(x, *[s[task] for s in self._stacked])
        return self._fn(self._prepare(x), *self._task_inputs[task])

    def stacked_logits(self, x: Tensor) -> Tensor:
        """Logits of every sub-network, ``T x B x C``."""
        if self.mode == "batched":
            fn = torch.func.vmap(self._fn, in_dims=(None,) + (0,) * len(self._stacked))
            chunks = []
            for start in range(0, len(self), self.tasks_per_pass):
                part = [s[start:start + self.tasks_per_pass] for s in self._stacked]
                chunks.append(fn(x, *part))
            return torch.cat(chunks)
        return torch.stack(self.all_logits(x))

    def features_and_logits(self, x: Tensor, task: int) -> Tuple[Tensor, Tensor]:
        """Sub-network ``task``'s penultimate features (its classifier's input) and logits."""
        if self._features_fn is None and self.mode == "graph":
            try:
                self._features_fn, _ = trace_for_tasks(
                    self.model, dict(self.ownership.layers), self.fold_batchnorm, self.ownership.classifier_name
                )
            except Untraceable:
                self._features_fn = False
        if self.mode == "graph" and self._features_fn:
            return self._features_fn(self._prepare(x), *self._task_inputs[task])
        captured: List[Tensor] = []
        hook = self.ownership.classifier.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
        try:
            tensors = self.tasks[task] if self.mode == "module" else self._module_tensors(task)
            logits = functional_call(self.model, tensors, (x,))
        finally:
            hook.remove()
        return captured[-1], logits

    def _module_tensors(self, task: int) -> Dict[str, Tensor]:
        """``task``'s masked weights and BatchNorm snapshot, by parameter name (for ``functional_call``)."""
        with torch.no_grad():
            tensors: Dict[str, Tensor] = {}
            for name, layer in self.ownership.layers.items():
                mask = self.ownership.subnetwork_mask(layer, task, self.weight_sharing)
                tensors[f"{name}.weight"] = layer.weight.detach() * mask
                tensors[f"{name}.mask"] = torch.ones((), device=layer.weight.device)
            if task < len(self.bn_snapshots):
                tensors.update(self.bn_snapshots[task])
            return tensors

    def all_logits(self, x: Tensor) -> List[Tensor]:
        """Logits of every sub-network, one ``B x C`` tensor per task."""
        if self.mode == "batched":
            return list(self.stacked_logits(x).unbind(0))
        if self.mode == "graph":
            x = self._prepare(x)
            return [self._fn(x, *inputs) for inputs in self._task_inputs]
        return [self.logits(x, t) for t in range(len(self.tasks))]


@dataclass
class Prediction:
    """One minibatch's answers, all from the same forward passes."""

    output: Tensor
    """Full-width TAg log-probabilities: the chosen slice's, LOG_EPS elsewhere."""
    tag_class: Tensor
    task: Tensor
    """Task chosen by task inference (TaskId)."""
    taw_class: Optional[Tensor]
    """Prediction with the given task's sub-network (None if no task was given)."""


def predict(
    bank: SubnetworkBank,
    x: Tensor,
    slices: Sequence[Tensor],
    temperature: float,
    rule: str,
    true_task: Optional[int] = None,
    statistics: Optional[ScoreStatistics] = None,
) -> Prediction:
    """TAg (and, if ``true_task`` is given, TAw) predictions for ``x``.

    ``rule`` and ``statistics``: see :mod:`avalanche_mind.task_id.rules`.
    """
    features = None
    if rule in STATISTICS_RULES:
        features, logits = map(list, zip(*(bank.features_and_logits(x, t) for t in range(len(bank)))))
    else:
        logits = bank.all_logits(x)
    slice_logits = [l[:, s] for l, s in zip(logits, slices)]
    task = choose_task(slice_logits, temperature, rule, statistics, features)
    output = logits[0].new_full(logits[0].shape, LOG_EPS)
    for t, (s, l) in enumerate(zip(slices, slice_logits)):
        rows = task == t
        if rows.any():
            output[rows.nonzero()[:, 0][:, None], s[None, :]] = F.log_softmax(l[rows], dim=1)
    tag_class = output.argmax(dim=1)
    taw_class = None
    if true_task is not None and 0 <= true_task < len(slices):
        taw_class = slices[true_task][slice_logits[true_task].argmax(dim=1)]
    return Prediction(output=output, tag_class=tag_class, task=task, taw_class=taw_class)
