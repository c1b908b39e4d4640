"""Plain torch modules that compute what a trained MIND Predictor computes, ready to export.

A gated model cannot be exported as it is: which weights it uses is set from
Python (``layer.mask``) and its BatchNorm state is swapped per task. The modules
here hold everything as data instead:

- :func:`single_task_module`: one sub-network as an ordinary dense network of the
  same architecture: masked weights, its BatchNorm snapshot folded into the
  convolutions before it, its own copy of the other per-experience tensors (biases,
  other normalisations: see :mod:`avalanche_mind.core.snapshots`), and a classifier
  cut down to the task's own classes;
- :class:`TaskAgnosticModule`: every sub-network and the task choice in one graph.
  The raw weights are stored once, with the 1-byte ownership map; each task's
  weights are ``weight * (owner selects task) * bn_scale`` computed in the graph
  (ONNX Runtime folds these into constants when it loads the file), so the
  file grows with the number of tasks by the BatchNorm vectors and the graph's
  nodes, not by a copy of the weights. (Only for an exporter that allows
  ``torch.func.functional_call``; TorchScript tracing gets one dense body per task.)
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from avalanche_mind.core.layers import batchnorm_modules, gated_layers, ungate
from avalanche_mind.task_id import choose_with, rule_constants

_BN_KEYS = ("running_mean", "running_var", "weight", "bias")


class ExportError(ValueError):
    """A model or checkpoint that cannot be exported faithfully; the message says why and what to do."""


class _Features(nn.Identity):
    """Stands where the classifier was: the body returns the classifier's input."""


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


def check_supported(model: nn.Module) -> None:
    """Refuse layers whose exported form could not equal the Predictor's; name the first one."""
    for name, module in batchnorm_modules(model):
        if not module.track_running_stats or module.running_mean is None:
            raise ExportError(
                f"unsupported layer {name!r} ({type(module).__name__}): BatchNorm without running statistics "
                "normalises each batch by itself, so no fixed graph reproduces it; build the model with "
                "track_running_stats=True"
            )
    classifier = [n for n, _ in gated_layers(model) if isinstance(model.get_submodule(n), nn.Linear)]
    if not classifier:
        raise ExportError("the model has no gated Linear layer: MIND's exporter needs a classifier (the last "
                          "nn.Linear) to cut each task's output slice from")


def _fold_pairs(body: nn.Module, foldable: Sequence[str]) -> List[Tuple[str, str]]:
    """(convolution, BatchNorm) module pairs where the BatchNorm is the convolution's only consumer."""
    try:
        traced = torch.fx.symbolic_trace(body)
    except Exception:  # noqa: BLE001 - an untraceable forward keeps its BatchNorms unfolded
        return []
    calls: Dict[str, int] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in traced.graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        bn = body.get_submodule(node.target)
        src = node.args[0]
        if not isinstance(bn, nn.BatchNorm2d) or not isinstance(src, torch.fx.Node) or src.op != "call_module":
            continue
        if src.target in foldable and len(src.users) == 1 and calls[src.target] == 1 and calls[node.target] == 1:
            conv = body.get_submodule(src.target)
            if isinstance(conv, nn.Conv2d) and conv.out_channels == bn.num_features:
                pairs.append((src.target, node.target))
    return pairs


class _Plan:
    """What the exported body is made of: layers, folds, per-task BatchNorm tensors."""

    def __init__(self, model: nn.Module, classifier: str, snapshots: Sequence[Dict[str, Tensor]]):
        self.layers = {n: l for n, l in gated_layers(model)}
        self.classifier = classifier
        self.body = ungate(copy.deepcopy(model)).eval()
        _set_submodule(self.body, classifier, _Features())
        foldable = [n for n in self.layers if n != classifier]
        self.folds = dict(_fold_pairs(self.body, foldable))  # conv -> bn
        self.bns = {n: m for n, m in batchnorm_modules(self.body)}
        for conv, bn in self.folds.items():
            layer = self.body.get_submodule(conv)
            if layer.bias is None:
                layer.bias = nn.Parameter(torch.zeros(layer.out_channels, dtype=layer.weight.dtype))
            _set_submodule(self.body, bn, nn.Identity())
        self.snapshots = snapshots
        for p in self.body.parameters():
            p.requires_grad_(False)
        # Tensors of the body each experience has its own copy of (unfolded norms, biases, tokens); a folded
        # convolution's bias is in its per-task shift instead.
        folded_biases = {f"{conv}.bias" for conv in self.folds}
        self.per_experience_keys = [k for k, v in self.body.state_dict().items()
                                    if k in snapshots[0] and v.is_floating_point() and k not in folded_biases]

    def per_experience(self, task: int) -> Dict[str, Tensor]:
        """Experience ``task``'s copy of each of :attr:`per_experience_keys` (the body's value if it has none)."""
        body = self.body.state_dict()
        return {k: self.snapshots[task].get(k, body[k]).detach() for k in self.per_experience_keys}

    def bias(self, task: int, layer: str) -> Optional[Tensor]:
        """Gated ``layer``'s bias as experience ``task`` left it (snapshots hold biases; older ones do not)."""
        live = self.layers[layer].bias
        return self.snapshots[task].get(f"{layer}.bias", live.detach() if live is not None else None)

    def bn_tensors(self, task: int, bn: str) -> Dict[str, Optional[Tensor]]:
        snapshot, module = self.snapshots[task], self.bns[bn]
        out = {}
        for key in _BN_KEYS:
            value = snapshot.get(f"{bn}.{key}")
            if value is None:
                live = getattr(module, key)
                value = live.detach() if live is not None else None
            out[key] = value
        return out

    def scale_shift(self, task: int, conv: str) -> Tuple[Tensor, Tensor]:
        """Eval-mode BatchNorm after ``conv`` as ``y = conv_nobias(x) * scale + shift``, per channel."""
        bn = self.folds[conv]
        state = self.bn_tensors(task, bn)
        scale = torch.rsqrt(state["running_var"] + self.bns[bn].eps)
        if state["weight"] is not None:
            scale = scale * state["weight"]
        bias = self.bias(task, conv)
        centre = -state["running_mean"] if bias is None else bias - state["running_mean"]
        shift = centre * scale
        if state["bias"] is not None:
            shift = shift + state["bias"]
        return scale, shift


def _mask(owner: Tensor, task: int, weight_sharing: bool, dtype: torch.dtype) -> Tensor:
    owner = owner.to(torch.int32)
    selected = ((owner >= 0) & (owner <= task)) if weight_sharing else (owner == task)
    return selected.to(dtype)


def _dense_task(model: nn.Module, classifier: str, snapshots, weight_sharing: bool, task: int,
                classes: Sequence[int]) -> Tuple[nn.Module, nn.Linear]:
    """Sub-network ``task`` as (dense body returning the classifier's input, classifier of ``classes``)."""
    plan = _Plan(model, classifier, snapshots)
    body = plan.body
    with torch.no_grad():
        for name, layer in plan.layers.items():
            if name == classifier:
                continue
            weight = layer.weight.detach() * _mask(layer.owner, task, weight_sharing, layer.weight.dtype)
            target = body.get_submodule(name)
            if name in plan.folds:
                scale, shift = plan.scale_shift(task, name)
                weight = weight * scale.view(-1, *([1] * (weight.dim() - 1))).to(weight.dtype)
                target.bias.copy_(shift)
            target.weight.copy_(weight)
        body.load_state_dict(plan.per_experience(task), strict=False)
        fc = plan.layers[classifier]
        rows = torch.tensor(list(classes), dtype=torch.long)
        head = nn.Linear(fc.in_features, len(rows), bias=fc.bias is not None)
        masked = fc.weight.detach() * _mask(fc.owner, task, weight_sharing, fc.weight.dtype)
        head.weight.copy_(masked[rows])
        if fc.bias is not None:
            head.bias.copy_(plan.bias(task, classifier)[rows])
    head.requires_grad_(False)
    return body.eval(), head.eval()


def single_task_module(model: nn.Module, classifier: str, snapshots, weight_sharing: bool, task: int,
                       classes: Sequence[int]) -> nn.Module:
    """Sub-network ``task`` as a dense copy of ``model``: input -> logits of ``classes`` (its slice), in order."""
    body, head = _dense_task(model, classifier, snapshots, weight_sharing, task, classes)
    _set_submodule(body, classifier, head)
    return body


def _key(name: str) -> str:
    return name.replace(".", "__")


class TaskAgnosticModule(nn.Module):
    """Every sub-network, the task choice and the chosen slice's probabilities, in one forward.

    ``forward(x) -> (class id, chosen task, probabilities)``: probabilities are
    ``B x num_classes``, the softmax of the chosen task's slice logits and zero
    elsewhere (the Predictor's TAg output, exponentiated).
    """

    def __init__(self, model: nn.Module, classifier: str, snapshots, weight_sharing: bool,
                 slices: Sequence[Sequence[int]], temperature: float, rule: str, statistics, num_classes: int,
                 compact: bool = True):
        super().__init__()
        self.compact = compact
        self.n_tasks, self.weight_sharing = len(slices), weight_sharing
        self.temperature, self.rule = float(temperature), rule
        fc = dict(gated_layers(model))[classifier]
        if compact:
            self._register_compact(_Plan(model, classifier, snapshots), classifier)
        else:  # torch.jit.trace refuses functional_call: one dense body per task instead
            pairs = [_dense_task(model, classifier, snapshots, weight_sharing, t, s) for t, s in enumerate(slices)]
            self.bodies = nn.ModuleList([body for body, _ in pairs])
            self.heads = nn.ModuleList([head for _, head in pairs])
        for t, classes in enumerate(slices):
            rows = torch.tensor(list(classes), dtype=torch.long)
            self.register_buffer(f"rows__{t}", rows)
            # Softmax of the slice placed in the full-width row by a 0/1 matrix: exact, no scatter needed.
            self.register_buffer(f"place__{t}", F.one_hot(rows, num_classes).to(fc.weight.dtype))
        self.rule_keys = []
        for key, value in rule_constants(rule, statistics, self.n_tasks).items():
            self.register_buffer(f"rule__{key}", value)
            self.rule_keys.append(key)

    def _register_compact(self, plan: _Plan, classifier: str) -> None:
        """Raw weights once, 1-byte owners, per-task BatchNorm scale/shift (folded) and per-experience tensors."""
        self.body = plan.body
        self.layer_names = [n for n in plan.layers if n != classifier]
        self.folded = [n in plan.folds for n in self.layer_names]
        self.per_experience_keys = list(plan.per_experience_keys)
        for name in self.layer_names:
            self.register_buffer(f"owner__{_key(name)}", self._rank(plan.layers[name].owner))
            if name in plan.folds:
                scales, shifts = zip(*(plan.scale_shift(t, name) for t in range(self.n_tasks)))
                self.register_buffer(f"scale__{_key(name)}", torch.stack(scales))
                self.register_buffer(f"shift__{_key(name)}", torch.stack(shifts))
        per_task = [plan.per_experience(t) for t in range(self.n_tasks)]
        for key in self.per_experience_keys:
            self.register_buffer(f"own__{_key(key)}", torch.stack([tensors[key] for tensors in per_task]))
        fc = plan.layers[classifier]
        self.register_buffer("fc__weight", fc.weight.detach().clone())
        self.register_buffer("fc__owner", self._rank(fc.owner))
        self.register_buffer("fc__bias", torch.stack([plan.bias(t, classifier) for t in range(self.n_tasks)])
                             if fc.bias is not None else None)

    def _rank(self, owner: Tensor) -> Tensor:
        """With weight sharing, task t uses the weights with ``0 <= owner <= t``: FREE (-1) is stored as the
        dtype's largest value, so one comparison (``rank <= t``) selects them in the graph."""
        owner = owner.detach().clone()
        if self.weight_sharing:
            owner[owner < 0] = torch.iinfo(owner.dtype).max
        return owner

    def _select(self, rank: Tensor, t: int, dtype: torch.dtype) -> Tensor:
        return (rank <= t if self.weight_sharing else rank == t).to(dtype)

    def _task_tensors(self, t: int, ranks: Dict[str, Tensor]) -> Dict[str, Tensor]:
        tensors: Dict[str, Tensor] = {}
        for name, folded in zip(self.layer_names, self.folded):
            layer = self.body.get_submodule(name)
            weight = layer.weight * self._select(ranks[name], t, layer.weight.dtype)
            if folded:
                scale = getattr(self, f"scale__{_key(name)}")[t]
                weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
                tensors[f"{name}.bias"] = getattr(self, f"shift__{_key(name)}")[t]
            tensors[f"{name}.weight"] = weight
        for key in self.per_experience_keys:
            tensors[key] = getattr(self, f"own__{_key(key)}")[t]
        return tensors

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        slice_logits: List[Tensor] = []
        features: List[Tensor] = []
        if self.compact:  # widened once, compared once per task
            ranks = {n: getattr(self, f"owner__{_key(n)}").to(torch.int32) for n in self.layer_names}
            fc_rank = self.fc__owner.to(torch.int32)
        for t in range(self.n_tasks):
            if not self.compact:
                feats = self.bodies[t](x)
                slice_logits.append(self.heads[t](feats))
                features.append(feats)
                continue
            feats = functional_call(self.body, self._task_tensors(t, ranks), (x,))
            fc = self.fc__weight * self._select(fc_rank, t, self.fc__weight.dtype)
            rows = getattr(self, f"rows__{t}")
            bias = self.fc__bias[t].index_select(0, rows) if self.fc__bias is not None else None
            slice_logits.append(F.linear(feats, fc.index_select(0, rows), bias))
            features.append(feats)
        constants = {k: getattr(self, f"rule__{k}") for k in self.rule_keys}
        task = choose_with(self.rule, self.temperature, slice_logits, features, constants)
        full = torch.stack(
            [F.softmax(l, dim=1) @ getattr(self, f"place__{t}") for t, l in enumerate(slice_logits)], dim=1
        )  # B x T x C
        probabilities = full.gather(1, task.view(-1, 1, 1).expand(-1, 1, full.shape[2])).squeeze(1)
        return probabilities.argmax(dim=1), task, probabilities


__all__ = ["ExportError", "TaskAgnosticModule", "check_supported", "single_task_module"]
