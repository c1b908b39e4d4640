"""MIND's forward as a pure function of the input and one task's tensors (``torch.fx``).

The model's forward is traced once and rewritten so that each gated layer's
``weight * mask`` and each BatchNorm's state become inputs ("slots"): running a
task's sub-network is then one call with that task's tensors, and the model is
never modified. An eval-mode BatchNorm that directly follows a masked convolution
is a per-channel affine map, so it is folded into that convolution's weight and
bias. Anything the rewrite does not recognise is refused (:class:`Untraceable`),
so that no task can end up running with another task's tensors.
"""
from __future__ import annotations

import operator
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx import Graph, GraphModule, Node

from avalanche_mind.core.layers import GatedConv2d, GatedLinear, batchnorm_modules
from avalanche_mind.core.snapshots import per_experience_tensors

BN_KEYS = ("running_mean", "running_var", "weight", "bias")
"""The tensors of a BatchNorm that a task owns (its snapshot)."""

# A slot is one per-task tensor input of the traced function:
#   ("weight", layer)              the layer's masked weight
#   ("folded_weight", layer, bn)   masked weight scaled by the BatchNorm's gamma / std
#   ("folded_bias", layer, bn)     the BatchNorm's beta - mean * gamma / std (+ the layer's bias, scaled)
#   ("bn", bn, key)                a BatchNorm tensor (key in BN_KEYS)
#   ("tensor", name)               another per-experience tensor read by the forward (a bias, a token)
Slot = Tuple[str, ...]

_CONV_FUNCTIONS = {torch.conv2d, F.conv2d}
_MUL_FUNCTIONS = {operator.mul, torch.mul}


class Untraceable(Exception):
    """The model's forward cannot be rewritten safely: use the module path."""


def trace_for_tasks(
    model: nn.Module, gated: Dict[str, nn.Module], fold_batchnorm: bool, features_of: Optional[str] = None
) -> Tuple[GraphModule, List[Slot]]:
    """Trace ``model`` and rewrite it as ``f(x, *slots)``; return (GraphModule, slots).

    ``features_of``: the name of the classifier layer; ``f`` then returns
    ``(the classifier's input, logits)`` (penultimate features, for task identification).

    Raises :class:`Untraceable` when the forward reads a gated weight, a mask or a
    BatchNorm module in a way this rewrite does not know, so no task could end up
    using another task's tensors by mistake.
    """
    batchnorms = dict(batchnorm_modules(model))
    batchnorm_tensors = {f"{n}.{k}" for n, m in batchnorms.items() for k in m.state_dict()}
    per_task = set(per_experience_tensors(model)) - batchnorm_tensors
    traced = _trace_in_eval_mode(model)
    nodes = list(traced.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise Untraceable("forward takes more than one input")
    masked = _masked_weights(traced, nodes, gated, batchnorms)
    tensors = _per_task_reads(traced, nodes, batchnorms, per_task)
    bn_calls = _batchnorm_calls(nodes, batchnorms)
    folded = _foldable_batchnorms(bn_calls, masked) if fold_batchnorm else {}
    slots = _slots(masked, folded, bn_calls, batchnorms) + [("tensor", name) for name in tensors]
    new, env = _rewrite(nodes, placeholders[0], slots, masked, folded, gated, batchnorms)
    if features_of is not None:
        _return_classifier_input(new, env, masked, features_of)
    return _compile(traced, new), slots


def _trace_in_eval_mode(model: nn.Module) -> GraphModule:
    """``torch.fx.symbolic_trace`` of the eval-mode forward; every module's mode is restored after."""
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as error:  # any tracing failure means "use the module path"
        raise Untraceable(str(error)) from error
    finally:
        for module, mode in was_training.items():
            module.training = mode


def _module_and_attr(target: str) -> Tuple[str, str]:
    module, _, attr = target.rpartition(".")
    return module, attr


def _is_gated_tensor(node: Node, gated: Dict[str, nn.Module]) -> bool:
    """A read of a gated layer's ``weight`` or ``mask``."""
    if node.op != "get_attr":
        return False
    module_name, attr = _module_and_attr(node.target)
    return module_name in gated and attr in ("weight", "mask")


def _masked_weights(
    traced: GraphModule, nodes: List[Node], gated: Dict[str, nn.Module], batchnorms: Dict[str, nn.Module]
) -> Dict[Node, str]:
    """Each gated layer's ``weight * mask`` node -> the layer's name; refuse any other use of them."""
    masked: Dict[Node, str] = {}
    for node in nodes:
        if node.op == "call_module" and node.target not in batchnorms:
            module = traced.get_submodule(node.target)
            if any(isinstance(m, (GatedConv2d, GatedLinear, nn.modules.batchnorm._BatchNorm)) for m in module.modules()):
                raise Untraceable(f"module {node.target} hides a gated layer or BatchNorm")
        if node.op == "get_attr":
            module_name, _ = _module_and_attr(node.target)
            if module_name in batchnorms:
                raise Untraceable(f"{node.target} is read outside its BatchNorm module")
            if _is_gated_tensor(node, gated):
                masked[_masking_product(node, module_name)] = module_name
    if sorted(set(masked.values())) != sorted(gated):
        raise Untraceable("some gated layer is not reached by the traced forward")
    if len(masked) != len(gated):
        raise Untraceable("a gated layer is used more than once")
    return masked


def _per_task_reads(
    traced: GraphModule, nodes: List[Node], batchnorms: Dict[str, nn.Module], per_task: set
) -> List[str]:
    """The per-experience tensors outside BatchNorm (biases, tokens) the forward reads, in order.

    Each becomes a slot; a module call that would read such a tensor inside itself
    (a LayerNorm, a GroupNorm) is refused: the graph would hold the live value for every task.
    """
    reads: List[str] = []
    for node in nodes:
        if node.op == "call_module" and node.target not in batchnorms:
            prefix = f"{node.target}."
            if any(name.startswith(prefix) for name in per_task):
                raise Untraceable(f"module {node.target} holds per-experience tensors")
        if node.op == "get_attr" and node.target in per_task and node.target not in reads:
            reads.append(node.target)
    return reads


def _masking_product(node: Node, layer: str) -> Node:
    """The ``weight * mask`` node that is the only use of ``node`` (the layer's weight or mask)."""
    users = list(node.users)
    if len(users) != 1 or users[0].op != "call_function" or users[0].target not in _MUL_FUNCTIONS:
        raise Untraceable(f"{node.target} is used other than as weight * mask")
    mul = users[0]
    names = {_module_and_attr(a.target) for a in mul.args if isinstance(a, Node) and a.op == "get_attr"}
    if names != {(layer, "weight"), (layer, "mask")} or len(mul.args) != 2 or mul.kwargs:
        raise Untraceable(f"unexpected use of {node.target}")
    return mul


def _batchnorm_calls(nodes: List[Node], batchnorms: Dict[str, nn.Module]) -> List[Node]:
    """The forward's BatchNorm calls: each module called once, on one input, with running statistics."""
    bn_calls = [n for n in nodes if n.op == "call_module" and n.target in batchnorms]
    if len({n.target for n in bn_calls}) != len(bn_calls):
        raise Untraceable("a BatchNorm module is used more than once")
    for bn_node in bn_calls:
        module = batchnorms[bn_node.target]
        if not module.track_running_stats or module.running_mean is None:
            raise Untraceable(f"BatchNorm {bn_node.target} has no running statistics")
        if len(bn_node.args) != 1 or bn_node.kwargs:
            raise Untraceable(f"unexpected call of BatchNorm {bn_node.target}")
    return bn_calls


def _foldable_batchnorms(bn_calls: List[Node], masked: Dict[Node, str]) -> Dict[Node, Tuple[Node, str]]:
    """BatchNorm node -> (convolution node, gated layer) for each BatchNorm applied to a masked
    convolution's output that nothing else reads: it folds into that convolution."""
    folded: Dict[Node, Tuple[Node, str]] = {}
    for bn_node in bn_calls:
        conv = bn_node.args[0]
        if (
            isinstance(conv, Node)
            and conv.op == "call_function"
            and conv.target in _CONV_FUNCTIONS
            and len(conv.users) == 1
            and not conv.kwargs
            and len(conv.args) >= 2
            and conv.args[1] in masked
            and len(conv.args[1].users) == 1
        ):
            folded[bn_node] = (conv, masked[conv.args[1]])
    return folded


def _fold_of_layer(folded: Dict[Node, Tuple[Node, str]]) -> Dict[str, str]:
    """Gated layer -> the BatchNorm folded into it."""
    return {layer: bn.target for bn, (_, layer) in folded.items()}


def _slots(
    masked: Dict[Node, str],
    folded: Dict[Node, Tuple[Node, str]],
    bn_calls: List[Node],
    batchnorms: Dict[str, nn.Module],
) -> List[Slot]:
    """The rewritten function's per-task inputs, in order: layers' weights, then unfolded BatchNorms."""
    fold_of_layer = _fold_of_layer(folded)
    slots: List[Slot] = []
    for layer in masked.values():
        if layer in fold_of_layer:
            slots += [("folded_weight", layer, fold_of_layer[layer]), ("folded_bias", layer, fold_of_layer[layer])]
        else:
            slots.append(("weight", layer))
    for bn_node in bn_calls:
        if bn_node not in folded:
            module = batchnorms[bn_node.target]
            for key in BN_KEYS:
                if key in ("weight", "bias") and getattr(module, key) is None:
                    continue
                slots.append(("bn", bn_node.target, key))
    return slots


def _rewrite(
    nodes: List[Node],
    x: Node,
    slots: List[Slot],
    masked: Dict[Node, str],
    folded: Dict[Node, Tuple[Node, str]],
    gated: Dict[str, nn.Module],
    batchnorms: Dict[str, nn.Module],
) -> Tuple[Graph, Dict[Node, Node]]:
    """Copy the traced graph into a new one whose inputs are ``x`` and the slots.

    Returns the new graph and the map from traced nodes to their copies.
    """
    new = Graph()
    env: Dict[Node, Node] = {x: new.placeholder(x.name)}
    slot_nodes: Dict[Slot, Node] = {key: new.placeholder(f"slot_{i}") for i, key in enumerate(slots)}
    fold_of_layer = _fold_of_layer(folded)
    conv_bias_of = {conv: (layer, bn.target) for bn, (conv, layer) in folded.items()}
    for node in nodes:
        if node is x or _is_gated_tensor(node, gated):
            continue  # weights and masks are replaced by the slots
        if node in masked:
            layer = masked[node]
            key = ("folded_weight", layer, fold_of_layer[layer]) if layer in fold_of_layer else ("weight", layer)
            env[node] = slot_nodes[key]
        elif node in folded:
            env[node] = env[folded[node][0]]  # the convolution already applies it
        elif node.op == "call_module" and node.target in batchnorms:
            env[node] = _eval_batch_norm(new, env[node.args[0]], node.target, batchnorms[node.target], slot_nodes)
        elif node in conv_bias_of:
            env[node] = _conv_with_bias(new, node, env, slot_nodes[("folded_bias", *conv_bias_of[node])])
        elif node.op == "get_attr" and ("tensor", node.target) in slot_nodes:
            env[node] = slot_nodes[("tensor", node.target)]
        else:
            env[node] = new.node_copy(node, lambda n: env[n])
    return new, env


def _eval_batch_norm(new: Graph, x: Node, name: str, module: nn.Module, slot_nodes: Dict[Slot, Node]) -> Node:
    """Eval-mode BatchNorm ``name`` of ``x`` with the task's tensors from the slots."""
    w = slot_nodes[("bn", name, "weight")] if module.weight is not None else None
    b = slot_nodes[("bn", name, "bias")] if module.bias is not None else None
    return new.call_function(
        F.batch_norm,
        (x, slot_nodes[("bn", name, "running_mean")], slot_nodes[("bn", name, "running_var")], w, b),
        {"training": False, "momentum": 0.0, "eps": module.eps},
    )


def _conv_with_bias(new: Graph, conv: Node, env: Dict[Node, Node], bias: Node) -> Node:
    """``conv`` copied with ``bias`` (the folded BatchNorm's) as its bias argument."""
    args = list(torch.fx.map_arg(conv.args, lambda n: env[n]))
    while len(args) < 3:
        args.append(None)
    # The layer's own bias (shared, not owned) is folded into the slot too.
    args[2] = bias
    return new.call_function(conv.target, tuple(args), {})


def _return_classifier_input(new: Graph, env: Dict[Node, Node], masked: Dict[Node, str], classifier: str) -> None:
    """Make ``new`` return ``(the classifier's input, logits)`` instead of the logits."""
    muls = [mul for mul, layer in masked.items() if layer == classifier]
    consumers = list(muls[0].users) if muls else []
    if len(consumers) != 1 or not consumers[0].args or not isinstance(consumers[0].args[0], Node):
        raise Untraceable(f"the input of classifier {classifier} is not found")
    output = next(n for n in new.nodes if n.op == "output")
    output.args = ((env[consumers[0].args[0]], output.args[0]),)


def _compile(traced: GraphModule, new: Graph) -> GraphModule:
    """The rewritten graph as a module, unused nodes removed and single-use intermediates reused."""
    new.lint()
    module = GraphModule(traced, new)
    module.graph.eliminate_dead_code()
    _reuse_memory(module)
    module.graph.lint()
    module.recompile()
    return module


def _relu_in_place(x: Tensor) -> Tensor:
    """ReLU into ``x``'s own memory (``x`` is a fresh intermediate used only here)."""
    return torch.relu_(x)


def _add_in_place(x: Tensor, other) -> Tensor:
    """``x + other`` into ``x``'s memory when the sum has ``x``'s shape and dtype."""
    if isinstance(other, Tensor) and other.shape == x.shape and other.dtype == x.dtype:
        return x.add_(other)
    return x + other


# Intermediates that own their memory: an in-place op on one of them, when it has
# no other user, changes nothing else (saves allocating and touching a new tensor).
_FRESH_FUNCTIONS = {
    torch.conv2d, F.conv2d, F.batch_norm, F.linear, torch._C._nn.linear, operator.add, torch.add,
    _relu_in_place, _add_in_place,
}
_RELU_FUNCTIONS = {F.relu, torch.relu}


def _reuse_memory(module: GraphModule) -> None:
    """Rewrite ReLUs and additions whose input is a fresh single-use tensor as in-place ops."""
    graph = module.graph
    for node in list(graph.nodes):
        if not node.args or not isinstance(node.args[0], Node):
            continue
        source = node.args[0]
        fresh = (
            source.op == "call_function"
            and source.target in _FRESH_FUNCTIONS
            and "out" not in source.kwargs
            and len(source.users) == 1
        )
        if not fresh:
            continue
        is_relu = (node.op == "call_function" and node.target in _RELU_FUNCTIONS and len(node.args) == 1) or (
            node.op == "call_module" and type(module.get_submodule(node.target)) is nn.ReLU
        )
        if is_relu:
            with graph.inserting_after(node):
                replacement = graph.call_function(_relu_in_place, (source,))
        elif node.op == "call_function" and node.target in (operator.add, torch.add) and len(node.args) == 2 and not node.kwargs:
            with graph.inserting_after(node):
                replacement = graph.call_function(_add_in_place, (source, node.args[1]))
        else:
            continue
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)
