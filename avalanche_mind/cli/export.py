"""The ``export`` command line: options, building the model as ``avalanche-mind evaluate`` does, the report.

Its own module so that ``avalanche-mind export`` can be wired into the main CLI with
two calls (:func:`add_export_arguments` on a sub-parser, :func:`run_export` on the
parsed arguments) and ``python -m avalanche_mind.export`` works on its own.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from avalanche_mind.task_id.rules import TASK_INFERENCE_RULES

PROG = "avalanche-mind export"
_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")
_TORCH_EXPORT_SUFFIXES = (".pt2",)


def _cli():
    """The main CLI's public builders and option parser, so that export builds models exactly as evaluate does."""
    from avalanche_mind.cli.builders import benchmark_shape, build_benchmark, build_model
    from avalanche_mind.cli.options import key_values
    from avalanche_mind.preflight import CLIError

    return argparse.Namespace(benchmark_shape=benchmark_shape, build_benchmark=build_benchmark,
                              build_model=build_model, key_values=key_values, CLIError=CLIError)


def _shape(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected an input shape without the batch, such as 3,32,32, got {text!r}")
    return values


def add_export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The export options on ``parser`` (a sub-parser of ``avalanche-mind``, or a parser of its own)."""
    from avalanche_mind.export.formats import DEFAULT_OPSET, EXPORTERS, FORMATS

    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint written by `avalanche-mind train`")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="artefact to write (written under a temporary name, kept only once verified)")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="onnx, torch-export (a .pt2 ExportedProgram: torch.export.load(path).module()) or "
                        "torchscript (deprecated: torch deprecates torch.jit, switch to torch-export); default: "
                        "torch-export for --out *.pt2, torchscript for *.pt/*.ts, else onnx")
    parser.add_argument("--task", default="all", metavar="T|all",
                        help="T: sub-network T alone (input -> logits of its classes); all (default): every "
                        "sub-network and the task choice (input -> class id, task, probabilities)")
    model = parser.add_argument_group("model (as for `avalanche-mind evaluate`)")
    from avalanche_mind.cli.options import add_recorded_model_arguments

    add_recorded_model_arguments(model)
    model.add_argument("--num-classes", type=int, default=None, metavar="N",
                       help="classifier outputs (default: recorded in the checkpoint, or the benchmark's)")
    model.add_argument("--input-shape", type=_shape, default=None, metavar="C,H,W",
                       help="one input's shape (default: recorded in the checkpoint, or the benchmark's)")
    data = parser.add_argument_group("verification inputs")
    data.add_argument("--benchmark", default=None, metavar="NAME",
                      help="verify on this benchmark's test inputs (default: standard-normal inputs)")
    data.add_argument("--benchmark-arg", action="append", default=None, metavar="KEY=VALUE",
                      help="keyword argument of the benchmark builder, repeatable")
    data.add_argument("--data-root", default=None, metavar="DIR", help="where the benchmark's data is")
    data.add_argument("--verify-batch", type=int, default=64, metavar="N",
                      help="inputs compared with the Predictor (default 64; one input alone is checked too)")
    data.add_argument("--seed", type=int, default=0, help="seed of the random verification inputs (default 0)")
    choice = parser.add_argument_group("task choice (--task all)")
    choice.add_argument("--task-inference", choices=TASK_INFERENCE_RULES, default=None,
                        help="task-choice rule (default: the trained strategy's)")
    choice.add_argument("--temperature", type=float, default=None, metavar="T",
                        help="task-choice temperature (default: the trained strategy's)")
    onnx = parser.add_argument_group("ONNX")
    onnx.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                      help=f"ONNX opset (default {DEFAULT_OPSET})")
    onnx.add_argument("--onnx-exporter", choices=EXPORTERS, default=None,
                      help="torch's exporter: dynamo (torch.export; needs onnxscript) or legacy (TorchScript-based, "
                      "deprecated by torch); default dynamo when onnxscript is installed")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the report to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return parser


def _benchmark_inputs(benchmark, count: int):
    """Up to ``count`` test inputs, taken evenly from every test experience (so every task is met)."""
    import torch

    stream = list(benchmark.test_stream)
    per = max(1, -(-count // len(stream)))
    xs = []
    for experience in stream:
        dataset = experience.dataset.eval()
        xs += [dataset[i][0] for i in range(min(per, len(dataset)))]
    return torch.stack(xs[:max(count, 2)])


def _build(args: argparse.Namespace):
    """The model to load the checkpoint into, its input shape, and the verification inputs (or None)."""
    from avalanche_mind.io.checkpoint import read_checkpoint

    cli = _cli()
    record = read_checkpoint(args.checkpoint).extra.get("cli", {})
    inputs, shape = None, {}
    if args.benchmark:
        benchmark = cli.build_benchmark(args.benchmark, args.data_root,
                                        cli.key_values(args.benchmark_arg, "--benchmark-arg"))
        shape = cli.benchmark_shape(benchmark)
        inputs = _benchmark_inputs(benchmark, args.verify_batch)
    trained = ([int(record["in_channels"]), int(record["image_size"]), int(record["image_size"])]
               if "in_channels" in record and "image_size" in record else None)
    if args.input_shape and trained and list(args.input_shape) != trained:
        raise ValueError(f"--input-shape {','.join(map(str, args.input_shape))} is not the shape "
                         f"{args.checkpoint} was trained on ({','.join(map(str, trained))}): the artefact would "
                         "claim inputs its model never saw; leave --input-shape out")
    input_shape = args.input_shape or (list(inputs.shape[1:]) if inputs is not None else None) or trained
    if input_shape is None:
        raise ValueError(f"{args.checkpoint} does not record its input shape: give --input-shape C,H,W "
                         "(or --benchmark NAME)")
    num_classes = args.num_classes or record.get("num_classes") or shape.get("num_classes")
    if num_classes is None:
        raise ValueError(f"{args.checkpoint} does not record its number of classes: give --num-classes N")
    model_name = args.model or record.get("model", "auto")
    model_kwargs = cli.key_values(args.model_arg, "--model-arg") if args.model_arg else dict(
        record.get("model_kwargs", {}) if model_name == record.get("model", "auto") else {})
    model = cli.build_model(model_name, int(num_classes), int(input_shape[0]), int(input_shape[-1]), model_kwargs)
    return model, input_shape, inputs


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    suffix = Path(args.out).suffix.lower()
    if suffix in _TORCH_EXPORT_SUFFIXES:
        return "torch-export"
    return "torchscript" if suffix in _TORCHSCRIPT_SUFFIXES else "onnx"


def run_export(args: argparse.Namespace) -> int:
    """Run the export command on parsed ``args``: 0 when written and verified, 1 when verification
    failed (file deleted), 2 for bad input (one line on stderr, no traceback)."""
    from avalanche_mind.export.artefact import VerificationError, export_checkpoint
    from avalanche_mind.io.checkpoint import CheckpointError

    CLIError = _cli().CLIError  # noqa: N806
    try:
        if args.verify_batch < 2:
            raise ValueError("--verify-batch must be >= 2")
        task = args.task if args.task == "all" else _task_id(args.task)
        if args.json:
            from avalanche_mind.preflight import check_writable

            check_writable(args.json, "--json")  # before the work: the artefact must not be made in vain
        check_output(args.out)
        model, input_shape, inputs = _build(args)
        report = export_checkpoint(
            args.checkpoint, model, args.out, format=_format(args), task=task, input_shape=input_shape,
            inputs=inputs, task_inference=args.task_inference, temperature=args.temperature, opset=args.opset,
            exporter=args.onnx_exporter, verify_batch=args.verify_batch, seed=args.seed,
        )
    except VerificationError as error:
        print(f"{PROG}: verification failed: {error}", file=sys.stderr)
        return 1
    except (CLIError, CheckpointError, FileNotFoundError, ValueError, OSError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    if not args.quiet:
        print("\n".join(report.lines()))
    if args.json:
        from dataclasses import asdict

        from avalanche_mind.io.files import atomic_write_text

        try:
            atomic_write_text(Path(args.json), json.dumps(asdict(report), indent=2, default=str))
        except OSError as error:
            print(f"{PROG}: error: --json {args.json} could not be written ({error.strerror or error}); the "
                  f"artefact {args.out} is written and verified", file=sys.stderr)
            return 2
    return 0


def check_output(out) -> None:
    """``--out`` writable, checked before the export (one line, exit 2, otherwise)."""
    from avalanche_mind.preflight import check_writable

    check_writable(out, "--out")


def _task_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--task must be a task id (0, 1, ...) or 'all', got {text!r}") from None


def build_export_parser() -> argparse.ArgumentParser:
    from avalanche_mind.preflight import OneLineParser

    parser = OneLineParser(
        prog=PROG,
        description="Export a trained MIND checkpoint to ONNX, torch.export (.pt2) or TorchScript (deprecated): "
        "one sub-network (--task T) or the whole task-agnostic predictor (--task all). The artefact is run back "
        "and compared with avalanche_mind.Predictor before it is kept.",
    )
    return add_export_arguments(parser)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m avalanche_mind.export``; returns the exit status."""
    args = build_export_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return run_export(args)


__all__ = ["add_export_arguments", "build_export_parser", "main", "run_export"]
