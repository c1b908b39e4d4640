"""``avalanche-mind evaluate``: a checkpoint's TAw, TAg and task identification on a benchmark's test stream.

The benchmark and model default to those the checkpoint records; the data must be
what it was trained on (checked per experience before any figure is computed).
"""
from __future__ import annotations

import argparse
import json

from avalanche_mind.cli.builders import benchmark_shape, build_benchmark, build_model
from avalanche_mind.cli.options import key_values
from avalanche_mind.core.state import experience_classes
from avalanche_mind.inference.predictor import Predictor
from avalanche_mind.io.checkpoint import read_checkpoint
from avalanche_mind.io.files import atomic_write_text
from avalanche_mind.preflight import CLIError, check_device, check_writable


def _few_classes(classes) -> str:
    classes = list(classes)
    return str(classes) if len(classes) <= 8 else f"[{', '.join(map(str, classes[:8]))}, ... ({len(classes)} classes)]"


def cmd_evaluate(args: argparse.Namespace) -> int:
    """TAw, TAg and TaskId of a checkpoint per test experience, through the Predictor (no strategy)."""
    check_device(args.device)
    if args.json:
        check_writable(args.json, "--json")
    record = read_checkpoint(args.checkpoint).extra.get("cli", {})
    name = args.benchmark or record.get("benchmark")
    if name is None:
        raise CLIError(f"{args.checkpoint} does not record its benchmark: give --benchmark NAME")
    bench_kwargs = key_values(args.benchmark_arg, "--benchmark-arg") if args.benchmark_arg else dict(
        record.get("benchmark_kwargs", {}) if name == record.get("benchmark") else {}
    )
    data_root = args.data_root if args.data_root is not None else record.get("data_root")
    benchmark = build_benchmark(name, data_root, bench_kwargs)
    shape = benchmark_shape(benchmark)
    model_name = args.model or record.get("model", "auto")
    model_kwargs = key_values(args.model_arg, "--model-arg") if args.model_arg else dict(
        record.get("model_kwargs", {}) if model_name == record.get("model", "auto") else {}
    )
    model = build_model(model_name, int(record.get("num_classes", shape["num_classes"])),
                        int(record.get("in_channels", shape["in_channels"])), shape["image_size"], model_kwargs)
    predictor = Predictor.from_checkpoint(args.checkpoint, model, device=args.device,
                                          temperature=args.temperature, task_inference=args.task_inference)
    for experience in benchmark.test_stream:  # the data must be what the checkpoint was trained on
        exp_id, classes = int(experience.current_experience), experience_classes(experience)
        task = predictor.task_of_experience(exp_id)
        n_outputs = predictor.ownership.classifier.out_features if predictor.ownership.classifier else None
        if (task >= 0 and not set(classes) <= set(predictor.state.slices[task])) or (
                n_outputs is not None and classes and classes[-1] >= n_outputs):
            trained = predictor.state.slices[task] if task >= 0 else "no experience with this id"
            raise CLIError(
                f"benchmark {name!r} does not match {args.checkpoint}: its test experience {exp_id} has classes "
                f"{_few_classes(classes)}, the checkpoint's experience {exp_id} was trained on "
                f"{_few_classes(trained) if task >= 0 else trained}"
                + (f" (and its classifier has {n_outputs} outputs)" if n_outputs is not None else "")
                + "; evaluate on the benchmark and --benchmark-arg values it was trained with"
            )
    rows = []
    totals = {"TAg": [0.0, 0], "TAw": [0.0, 0], "TaskId": [0.0, 0]}
    for experience in benchmark.test_stream:
        dataset = experience.dataset.eval()
        exp_id = int(experience.current_experience)
        scores = predictor.evaluate(dataset, batch_size=args.batch_size, experience_id=exp_id)
        rows.append({"experience": exp_id, "task": predictor.task_of_experience(exp_id), "n": len(dataset), **scores})
        for key, value in scores.items():
            totals[key][0] += value * len(dataset)
            totals[key][1] += len(dataset)
    summary = {k: s / n for k, (s, n) in totals.items() if n}
    if not args.quiet:
        print(f"{'exp':>4} {'task':>4} {'n':>6} {'TAg':>7} {'TAw':>7} {'TaskId':>7}")
        for row in rows:
            cells = [f"{row[k]:7.4f}" if k in row else f"{'-':>7}" for k in ("TAg", "TAw", "TaskId")]
            print(f"{row['experience']:>4} {row['task']:>4} {row['n']:>6} " + " ".join(cells))
    print("all: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items())
          + f" (TAw and TaskId over the {predictor.n_tasks} trained experiences)")
    if args.json:
        atomic_write_text(args.json, json.dumps({"experiences": rows, "summary": summary,
                                                 "checkpoint": str(args.checkpoint)}, indent=2))
    return 0
