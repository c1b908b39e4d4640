"""Writing and running the artefact formats: ONNX (through ONNX Runtime), torch.export (``.pt2``)
and TorchScript (deprecated by torch, kept while torch ships it).

Kept apart from the graph building so that each format's quirks (which exporter,
how metadata is stored, how a file is run back) sit in one place, and so that
``onnx``/``onnxruntime`` are imported only when an ONNX file is asked for: they are
an optional extra (``pip install -e '.[export]'``).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import warnings
import zipfile
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from avalanche_mind.export.graph import ExportError

FORMATS = ("onnx", "torch-export", "torchscript")
EXPORTERS = ("dynamo", "legacy")
"""ONNX exporters of torch: ``torch.export``-based (needs onnxscript, opset >= 18) and the
TorchScript-based one torch deprecates (``dynamo=False``)."""
DEFAULT_OPSET = 18
METADATA_KEY = "avalanche_mind"
EXTRA_FILE = "avalanche_mind.json"
"""The metadata record's name inside a TorchScript or ``.pt2`` archive (an extra file of each)."""
INSTALL_HINT = "pip install -e '.[export]'  (or: pip install onnx onnxruntime onnxscript)"


def require_onnx(exporter: Optional[str]) -> str:
    """The exporter to use; ExportError naming the install command when a package is missing."""
    missing = [name for name in ("onnx", "onnxruntime") if not _importable(name)]
    if exporter not in (None, *EXPORTERS):
        raise ExportError(f"unknown ONNX exporter {exporter!r}; use one of {list(EXPORTERS)}")
    if exporter is None:
        exporter = "dynamo" if _importable("onnxscript") else "legacy"
    if exporter == "dynamo" and not _importable("onnxscript"):
        missing.append("onnxscript")
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)} (not installed): {INSTALL_HINT}")
    return exporter


def _importable(name: str) -> bool:
    try:
        __import__(name)
        return True
    except ImportError:
        return False


@contextlib.contextmanager
def _quiet():
    """The exporters print progress lines and deprecation warnings that say nothing to a user here."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def write_onnx(module: nn.Module, example: Tensor, path: str, output_names: Sequence[str],
               metadata: Dict[str, object], opset: int, exporter: str) -> None:
    """``module`` as ONNX at ``path``, batch dimension dynamic, ``metadata`` in the model's properties."""
    import onnx

    if exporter == "dynamo" and opset < 18:
        raise ExportError(f"the dynamo ONNX exporter writes opset >= 18, not {opset}; use --opset 18 or "
                          "--onnx-exporter legacy")
    with _quiet(), torch.no_grad():
        if exporter == "dynamo":
            torch.onnx.export(module, (example,), path, input_names=["input"], output_names=list(output_names),
                              opset_version=opset, dynamo=True, dynamic_shapes=({0: _batch_dim()},),
                              external_data=False, verbose=False, optimize=False)
        else:
            axes = {name: {0: "batch"} for name in ["input", *output_names]}
            torch.onnx.export(module, (example,), path, input_names=["input"], output_names=list(output_names),
                              opset_version=opset, dynamo=False, dynamic_axes=axes, do_constant_folding=False)
    model = onnx.load(path)
    for node in model.graph.node:  # the dynamo exporter keeps a Python stack trace per node: bytes, no use here
        del node.metadata_props[:]
        node.doc_string = ""
    del model.metadata_props[:]
    for key, value in _flat_metadata(metadata).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, path)


def _flat_metadata(metadata: Dict[str, object]) -> Dict[str, str]:
    """The whole record as JSON under one key, and the headline fields as their own keys."""
    out = {METADATA_KEY: json.dumps(metadata, sort_keys=True)}
    for key in ("task", "class_ids", "opset", "torch_version", "task_inference"):
        if key in metadata:
            value = metadata[key]
            out[key] = value if isinstance(value, str) else json.dumps(value)
    return out


def _batch_dim() -> "torch.export.Dim":
    """The dynamic batch dimension of the torch.export-based writers (any batch size runs)."""
    return torch.export.Dim("batch", min=1, max=1 << 20)


def write_torch_export(module: nn.Module, example: Tensor, path: str, metadata: Dict[str, object]) -> None:
    """``module`` as an ExportedProgram (``torch.export.export``, batch dynamic) saved with ``metadata``.

    Traced on zeros of the example's shape: the file keeps its example inputs, which must
    be neither verification data nor a view pinning the whole batch's storage (values do
    not matter to the graph). Saved through an open file: ``torch.export.save`` warns about
    a path not ending in ``.pt2``, and the artefact is first written under a temporary name.
    """
    with _quiet(), torch.no_grad():
        program = torch.export.export(module, (torch.zeros_like(example),), dynamic_shapes=({0: _batch_dim()},))
    with open(path, "wb") as fh:
        torch.export.save(program, fh, extra_files={EXTRA_FILE: json.dumps(metadata, sort_keys=True)})


def _load_program(path: str):
    with open(path, "rb") as fh:
        return torch.export.load(fh)


def _pt2_extra_file(path: str, name: str) -> str:
    """An extra file of a ``.pt2`` archive (``<archive>/extra/<name>``), read without deserialising the
    program and its weights as ``torch.export.load(path, extra_files={name: ""})`` would (as long again
    as running it back)."""
    with zipfile.ZipFile(path) as archive:
        entry = next((n for n in archive.namelist() if n.endswith(f"/extra/{name}")), None)
        if entry is None:
            raise ValueError(f"{path} has no {name}: it was not written by avalanche-mind export")
        return archive.read(entry).decode("utf-8")


def write_torchscript(module: nn.Module, example: Tensor, path: str, metadata: Dict[str, object]) -> None:
    """``module`` traced (``torch.jit.trace``) and saved with ``metadata`` as an extra file."""
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(module, (example,), check_trace=False)
        torch.jit.save(traced, path, _extra_files={EXTRA_FILE: json.dumps(metadata, sort_keys=True)})


def read_metadata(path: str, fmt: str) -> Dict[str, object]:
    """The metadata record an artefact was written with."""
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        return json.loads(props[METADATA_KEY])
    if fmt == "torch-export":
        return json.loads(_pt2_extra_file(path, EXTRA_FILE))
    extra = {EXTRA_FILE: ""}
    with _quiet():
        torch.jit.load(path, map_location="cpu", _extra_files=extra)
    return json.loads(extra[EXTRA_FILE])


def runner(path: str, fmt: str, threads: Optional[int] = None) -> Callable[[Tensor], List[Tensor]]:
    """A function running the artefact at ``path`` on a CPU batch, returning its outputs as tensors."""
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

        def run_onnx(x: Tensor) -> List[Tensor]:
            outputs = session.run(None, {"input": np.ascontiguousarray(x.detach().cpu().numpy())})
            return [torch.from_numpy(np.asarray(o)) for o in outputs]

        return run_onnx
    if fmt == "torch-export":
        loaded = _load_program(path).module()  # captured in eval mode: BatchNorm uses its running statistics
    else:
        with _quiet():
            loaded = torch.jit.load(path, map_location="cpu").eval()

    def run_torch(x: Tensor) -> List[Tensor]:
        with torch.no_grad():
            out = loaded(x)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    return run_torch


def find_unsupported_layer(body: nn.Module, example: Tensor, fmt: str, exporter: str, opset: int
                           ) -> Optional[Tuple[str, str, str]]:
    """After a failed export: the first leaf layer that fails to export on its own (name, type, error)."""
    captured: Dict[str, Tuple[Tensor, ...]] = {}
    hooks = []
    for name, module in body.named_modules():
        if name and not list(module.children()):
            hooks.append(module.register_forward_pre_hook(
                lambda m, args, name=name: captured.setdefault(name, args) and None))
    try:
        with torch.no_grad():
            body(example)
    except Exception:  # noqa: BLE001 - no forward, no layer to blame
        return None
    finally:
        for hook in hooks:
            hook.remove()
    for name, args in captured.items():
        if not all(isinstance(a, Tensor) for a in args):
            continue
        module = body.get_submodule(name)
        try:
            with _quiet(), torch.no_grad():
                if fmt == "onnx":
                    with tempfile.TemporaryDirectory() as folder:
                        torch.onnx.export(module, tuple(args), os.path.join(folder, "layer.onnx"), opset_version=opset,
                                          dynamo=exporter == "dynamo")
                elif fmt == "torch-export":
                    torch.export.export(module, tuple(args))
                else:
                    torch.jit.trace(module, tuple(args), check_trace=False)
        except Exception as error:  # noqa: BLE001 - the point is to find the failing layer
            return name, type(module).__name__, first_line(error)
    return None


def first_line(error: BaseException) -> str:
    """The telling line of an exporter's error: the one naming an operator, else the first (no colours)."""
    chain, seen = [], error
    while seen is not None and len(chain) < 5:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for e in chain for line in str(e).splitlines()]
    lines = [line for line in lines if line]
    markers = ("no onnx function found", "aten::", "not supported")
    telling = next((line for marker in markers for line in lines if marker in line.lower()), None)
    text = telling or (lines[0] if lines else "")
    return f"{type(error).__name__}: {text}"[:300]


__all__ = ["DEFAULT_OPSET", "EXPORTERS", "FORMATS", "INSTALL_HINT", "find_unsupported_layer", "read_metadata",
           "require_onnx", "runner", "write_onnx", "write_torch_export", "write_torchscript"]
