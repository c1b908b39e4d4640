"""The ownership map: for every weight of every gated layer, the experience that owns it.

It is the single source of truth for sub-networks. The owner tensors themselves
live as ``owner`` buffers inside the gated layers (so ``model.state_dict()`` holds
them, one int8 per weight, int16 beyond 127 experiences); this class is the view
that reads and writes them.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from avalanche_mind.core.config import check_allocation_rule, check_capacity
from avalanche_mind.core.layers import FREE, GatedLayer, GatedLinear, gated_layers, he_normal_

Capacity = Union[str, float]


def owner_dtype(n_experiences: int) -> torch.dtype:
    """Smallest signed integer type that holds FREE and every experience id."""
    if n_experiences <= torch.iinfo(torch.int8).max:
        return torch.int8
    if n_experiences <= torch.iinfo(torch.int16).max:
        return torch.int16
    return torch.int32


def set_owner_dtype(model: nn.Module, n_experiences: int) -> None:
    """Give every gated layer's ``owner`` buffer the dtype :func:`owner_dtype` chooses for ``n_experiences``.

    Needed before a state is loaded into a freshly gated model (its owners are int8):
    ``load_state_dict`` copies into the existing buffer, so an owner id of 200 would
    otherwise load as -56.
    """
    dtype = owner_dtype(n_experiences)
    for _, layer in gated_layers(model):
        if layer.owner.dtype != dtype:
            layer.owner = layer.owner.to(dtype)


class OwnershipMap:
    """Read and change who owns which weight of a gated model.

    ``capacity`` is how many FREE weights of a layer an experience receives:
    ``"equal"`` gives ``numel // n_experiences`` (the paper's rule, which needs the
    number of experiences in advance); a float ``f`` in (0, 1) gives the fraction
    ``f`` of the weights still FREE (at least one while any is FREE), which needs no
    such knowledge: experience ``t`` gets about ``f * (1 - f) ** t`` of a layer, and
    ``n_experiences`` is then only an upper bound on the number of experiences (it
    sizes the owner dtype: int8 up to 127 experiences, int16 beyond).
    """

    def __init__(self, model: nn.Module, n_experiences: int, capacity: Capacity = "equal") -> None:
        self.layers: Dict[str, GatedLayer] = dict(gated_layers(model))
        if not self.layers:
            raise TypeError("the model has no gated layer; call avalanche_mind.gate_model(model) first")
        check_capacity(capacity)
        self.n_experiences = n_experiences
        self.capacity = capacity
        set_owner_dtype(model, n_experiences)
        linears = [n for n, l in self.layers.items() if isinstance(l, GatedLinear)]
        self.classifier_name: Optional[str] = linears[-1] if linears else None

    # ----------------------------------------------------------------- reading
    @property
    def classifier(self) -> Optional[GatedLinear]:
        """The last gated Linear layer, taken as the output layer."""
        return self.layers.get(self.classifier_name) if self.classifier_name else None

    def subnetwork_mask(self, layer: GatedLayer, task: int, weight_sharing: bool) -> Tensor:
        """Float 0/1 mask of the weights of ``task``'s sub-network in ``layer``."""
        return self.subnetwork_selection(layer, task, weight_sharing).to(layer.weight.dtype)

    @staticmethod
    def subnetwork_selection(layer: GatedLayer, task: int, weight_sharing: bool) -> Tensor:
        """Boolean mask of the weights of ``task``'s sub-network in ``layer``."""
        owner = layer.owner
        return (owner >= 0) & (owner <= task) if weight_sharing else owner == task

    def owned_by(self, layer: GatedLayer, owner: int) -> Tensor:
        """Boolean mask of the weights of ``layer`` whose owner is ``owner`` (FREE allowed)."""
        return layer.owner == owner

    def capacity_used(self) -> Dict[str, float]:
        """Fraction of each layer's weights owned by some experience."""
        return {n: float((l.owner != FREE).float().mean()) for n, l in self.layers.items()}

    def n_weights(self) -> int:
        return sum(l.weight.numel() for l in self.layers.values())

    # ----------------------------------------------------------------- gating
    def activate(self, task: int, weight_sharing: bool) -> None:
        """Gate every layer's forward pass to the sub-network of ``task``.

        The mask is kept boolean (one byte per weight instead of four while a task
        trains); ``weight * mask`` promotes it, with the same values as a float mask.
        """
        for layer in self.layers.values():
            layer.mask = self.subnetwork_selection(layer, task, weight_sharing)

    def activate_dense(self) -> None:
        """Forward passes use every weight (the self-distillation teacher)."""
        for layer in self.layers.values():
            layer.mask = torch.ones((), device=layer.weight.device)

    # ------------------------------------------------------------- allocation
    def layer_capacity(self, layer: GatedLayer) -> int:
        n_free = int((layer.owner == FREE).sum())
        if self.capacity == "equal":
            return min(layer.weight.numel() // self.n_experiences, n_free)
        # At least one weight while any is FREE, so a late experience is never empty.
        return min(max(int(round(self.capacity * n_free)), 1), n_free)

    def allocate(
        self,
        task: int,
        classes: Sequence[int],
        rule: str = "random",
        generator: Optional[torch.Generator] = None,
        zero_start: bool = False,
    ) -> None:
        """Give FREE weights to ``task`` in every layer, then zero the weights still FREE.

        ``rule="random"``: a uniform random choice, the new weights re-initialised
        (He normal), or, with ``zero_start``, left at zero (FREE weights are zero), so
        that a student with weight sharing starts as the sub-network before it (the
        authors' code). ``rule="magnitude"``: the largest-|w| FREE weights, keeping their
        (teacher-trained) values. In the classifier, a class-incremental experience
        takes exactly the rows of its classes when those rows are all FREE; when its
        classes were seen before (domain-incremental) the classifier is allocated like
        any other layer.
        """
        check_allocation_rule(rule)
        if not 0 <= task < self.n_experiences:
            policy = (
                f"capacity='equal' splits each layer into n_experiences={self.n_experiences} parts"
                if self.capacity == "equal"
                else f"n_experiences={self.n_experiences} is the upper bound this map was built for"
            )
            raise ValueError(
                f"cannot allocate experience {task}: {policy}; ids 0..{self.n_experiences - 1} are allowed. "
                "Build the map (or MIND) with a larger n_experiences."
            )
        with torch.no_grad():
            for name, layer in self.layers.items():
                flat_owner = layer.owner.view(-1)
                rows = self._class_rows(layer, classes) if name == self.classifier_name else None
                if rows is not None:
                    chosen = torch.nonzero(self._row_mask(layer, rows).view(-1)).view(-1)
                else:
                    chosen = self._choose(layer, rule, generator)
                flat_owner[chosen.to(flat_owner.device)] = task
                if rule == "random" and not zero_start:
                    he_normal_(layer.weight, chosen.to(layer.weight.device), generator)
                layer.weight.masked_fill_(layer.owner == FREE, 0.0)

    def _choose(self, layer: GatedLayer, rule: str, generator: Optional[torch.Generator]) -> Tensor:
        free = torch.nonzero(layer.owner.view(-1) == FREE).view(-1).cpu()
        k = self.layer_capacity(layer)
        if rule == "random":
            return free[torch.randperm(free.numel(), generator=generator)[:k]]
        magnitude = layer.weight.detach().view(-1)[free.to(layer.weight.device)].abs().cpu()
        return free[torch.topk(magnitude, k).indices]

    @staticmethod
    def _row_mask(layer: GatedLayer, rows: List[int]) -> Tensor:
        mask = torch.zeros_like(layer.owner, dtype=torch.bool)
        mask[rows] = True
        return mask

    def _class_rows(self, layer: GatedLayer, classes: Sequence[int]) -> Optional[List[int]]:
        rows = sorted(int(c) for c in classes)
        if len(rows) >= layer.out_features:
            return None  # the experience spans every output: domain-incremental
        if bool((layer.owner[rows] == FREE).all()):
            return rows
        return None

    def zero_free(self) -> None:
        """Set every FREE weight to zero (they are not part of any sub-network)."""
        with torch.no_grad():
            for layer in self.layers.values():
                layer.weight.masked_fill_(layer.owner == FREE, 0.0)

    def reinitialise_free(self, generator: Optional[torch.Generator] = None) -> None:
        """He-normal values for the FREE weights, so they can be trained (self-distillation teacher)."""
        for layer in self.layers.values():
            free = torch.nonzero(layer.owner.view(-1) == FREE).view(-1)
            he_normal_(layer.weight, free, generator)


def forward_from_classifier(network: nn.Module, x: Tensor, classifier_name: Optional[str]) -> Tensor:
    """``network(x)``, checking that the output is the output of the layer MIND splits as the classifier.

    MIND takes the last ``nn.Linear`` registered in the model as the classifier
    (its rows are the output slices); a model registering another Linear after
    its output layer would otherwise be split along the wrong layer, silently.
    """
    module = dict(network.named_modules()).get(classifier_name) if classifier_name is not None else None
    if module is None:
        return network(x)
    captured: List[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        out = network(x)
    finally:
        handle.remove()
    if not captured or captured[-1].shape != out.shape or not torch.equal(captured[-1], out):
        raise ValueError(
            f"MIND takes the last nn.Linear registered in the model, {classifier_name!r} "
            f"({module.in_features} -> {module.out_features}), as its classifier, but the model's "
            f"output (shape {list(out.shape)}) does not come from that layer. Register the output layer "
            "last in the model's __init__ (MIND splits the classifier's rows between experiences)."
        )
    return out
