"""Speed and size of exported MIND artefacts against the Predictor, same inputs, same machine (CPU).

::

    python benchmarks/export_speed.py                      # builds a demo checkpoint (gresnet32, 10 tasks)
    python benchmarks/export_speed.py --checkpoint runs/cifar.pt --model gresnet32 --num-classes 100

The demo checkpoint is trained for one epoch on a few generated 32x32 images: its
accuracy means nothing, but its shapes, ownership maps and BatchNorm snapshots are
those of the paper's CIFAR-100/10 setting, which is all that speed and size
depend on. Every timing runs with one thread (torch and ONNX Runtime alike), a
median of ``--repeats`` calls after a warm-up. Not a test: run by hand.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch


def demo_checkpoint(path: Path, n_experiences: int, num_classes: int) -> None:
    """gresnet32 trained one epoch per phase on 4 generated images per class, saved to ``path``."""
    from avalanche.training.plugins import EvaluationPlugin

    from avalanche_mind import MIND, gresnet32
    from avalanche_mind.io.checkpoint import save_checkpoint
    from avalanche_mind.data.toy import toy_class_incremental

    benchmark = toy_class_incremental(n_experiences=n_experiences, classes_per_experience=num_classes // n_experiences,
                                      per_class=4, test_per_class=1, image_size=32, seed=0)
    torch.manual_seed(0)
    strategy = MIND(model=gresnet32(num_classes=num_classes), n_experiences=n_experiences, teacher_epochs=1,
                    train_epochs=1, train_mb_size=64, eval_mb_size=128, milestones=[], teacher_milestones=[],
                    lr=0.001, teacher_lr=0.001,
                    seed=0, evaluator=EvaluationPlugin(loggers=[]))
    for experience in benchmark.train_stream:
        strategy.train(experience, eval_streams=[])
    save_checkpoint(strategy, path, extra={"cli": {"model": "gresnet32", "model_kwargs": {}, "num_classes": num_classes,
                                                  "in_channels": 3, "image_size": 32}})


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (ONNX Runtime and oneDNN pick kernels on the first call)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="a checkpoint (default: build the demo one)")
    parser.add_argument("--model", default="gresnet32")
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--experiences", type=int, default=10, help="tasks of the demo checkpoint (default 10)")
    parser.add_argument("--task", type=int, default=None, help="task of the single-task export (default: the last)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per batch size (default 5)")
    parser.add_argument("--out-dir", default=None, help="where artefacts go (default: a temporary folder)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from avalanche_mind.export.artefact import export_checkpoint
    from avalanche_mind.cli.export import _cli
    from avalanche_mind.export.formats import runner
    from avalanche_mind.inference.predictor import Predictor

    folder = Path(args.out_dir or tempfile.mkdtemp(prefix="mind-export-"))
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(args.checkpoint) if args.checkpoint else folder / "demo.pt"
    if not args.checkpoint:
        began = time.time()
        demo_checkpoint(checkpoint, args.experiences, args.num_classes)
        print(f"demo checkpoint: {checkpoint} ({time.time() - began:.0f} s to train)")

    def new_model():
        return _cli().build_model(args.model, args.num_classes, 3, 32, {})

    predictor = Predictor.from_checkpoint(checkpoint, new_model())
    task = predictor.n_tasks - 1 if args.task is None else args.task
    inputs = torch.randn(128, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    artefacts: Dict[str, object] = {}
    seconds: Dict[str, float] = {}
    ways = [("onnx all", "onnx", "all"), (f"onnx task {task}", "onnx", task), ("onnx task 0", "onnx", 0),
            ("torch-export all", "torch-export", "all"), (f"torch-export task {task}", "torch-export", task),
            ("torchscript all", "torchscript", "all"), (f"torchscript task {task}", "torchscript", task)]
    suffix = {"onnx": "onnx", "torch-export": "pt2", "torchscript": "pt"}
    for name, fmt, which in dict.fromkeys(ways):
        out = folder / f"{name.replace(' ', '_')}.{suffix[fmt]}"
        began = time.time()
        artefacts[name] = export_checkpoint(checkpoint, new_model(), out, format=fmt, task=which, inputs=inputs[:32])
        seconds[name] = time.time() - began

    print(f"\nsize (checkpoint {checkpoint.stat().st_size / 2**20:.2f} MiB, dense float32 weights "
          f"{artefacts['onnx all'].dense_float32_bytes / 2**20:.2f} MiB, {predictor.n_tasks} tasks)")
    print("| artefact | MiB | gzip MiB | vs checkpoint | vs dense float32 | weights used | export s | max diff p |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, report in artefacts.items():
        print(f"| {name} | {report.artefact_bytes / 2**20:.2f} | {report.artefact_gzip_bytes / 2**20:.2f} | "
              f"{report.artefact_bytes / report.checkpoint_bytes:.2f} | "
              f"{report.artefact_bytes / report.dense_float32_bytes:.2f} | {report.subnetwork_weights} | "
              f"{seconds[name]:.1f} | {report.max_probability_difference:.1e} |")

    rows: List[str] = []
    for batch in (1, 128):
        x = inputs[:batch]
        for which, label in (("all", "all tasks (TAg)"), (task, f"task {task} (TAw)")):
            ref = median_ms(lambda: predictor.predict(x) if which == "all" else predictor.predict(x, which),
                            args.repeats)
            cells = [f"{ref:.1f}"]
            for fmt in ("onnx", "torch-export", "torchscript"):
                name = f"{fmt} {'all' if which == 'all' else f'task {task}'}"
                run = runner(artefacts[name].path, fmt, threads=1)
                ms = median_ms(lambda: run(x), args.repeats)
                cells += [f"{ms:.1f}", f"{ref / ms:.2f}x"]
            rows.append(f"| {label} | {batch} | " + " | ".join(cells) + " |")
    print("\nspeed, one thread, median ms per call (ratio: Predictor time / artefact time, >1: artefact faster)")
    print("| what | batch | Predictor ms | ONNX Runtime ms | ratio | torch.export ms | ratio "
          "| TorchScript ms | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
