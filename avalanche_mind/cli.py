"""The ``avalanche-mind`` command: ``train``, ``evaluate`` and ``compare``.

::

    avalanche-mind train --benchmark glyphs --checkpoint runs/glyphs.pt --wandb --wandb-mode offline
    avalanche-mind train --benchmark glyphs --checkpoint runs/glyphs.pt --resume   # after an interruption
    avalanche-mind evaluate runs/glyphs.pt
    avalanche-mind compare --help

``avalanche-mind <command> --help`` explains every option.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from avalanche_mind.task_id import TASK_INFERENCE_RULES

PROG = "avalanche-mind"
LOCAL_BENCHMARKS = ("toy", "toy-domain")
"""Generated in memory by :mod:`avalanche_mind.data.toy`; for smoke runs and tests."""
MODELS = ("auto", "gresnet32", "gresnet32_64", "small_cnn", "resnet")


class CLIError(Exception):
    """A user error reported as one line, without a traceback."""


# ------------------------------------------------------------------ helpers
def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string


def _key_values(items: Optional[Sequence[str]], option: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise CLIError(f"{option} expects KEY=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        out[key.strip().replace("-", "_")] = _literal(text)
    return out


def _int_list(text: str) -> List[int]:
    text = text.strip()
    if text in ("", "none", "[]"):
        return []
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs such as 35 or 70,90, got {text!r}")


def _repo_module(name: str):
    """Import ``benchmarks.<x>`` from the repository (not part of the installed package)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name not in (name, name.split(".")[0]):
            raise
    relative = Path(*name.split(".")).with_suffix(".py")
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (root / relative).is_file():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            return importlib.import_module(name)
    raise CLIError(
        f"{name} is not available: it lives in the avalanche-mind repository ({relative}), not in "
        "the installed package. Run this command from a clone of the repository."
    )


def check_writable(path, option: str, *, folder: bool = False) -> None:
    """Raise :class:`CLIError` now, before any training, if ``path`` (a file, or a ``folder``) cannot be written."""
    path = Path(path)
    where = path if folder else path.parent
    if not folder and path.is_dir():
        raise CLIError(f"{option} {path} is a folder; give a file path")
    if folder and path.exists() and not path.is_dir():
        raise CLIError(f"{option} {path} is a file, not a folder")
    where = where.absolute()
    existing = next((a for a in [where, *where.parents] if a.exists()), where.anchor)
    if not Path(existing).is_dir():
        raise CLIError(f"{option} {path} cannot be written: {existing} is a file, not a folder. "
                       "(Checked before training, so no work is lost.)")
    try:  # a probe file in the nearest existing folder; nothing is created for good
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".avalanche-mind-write-check.")
        os.close(fd)
        os.unlink(probe)
        if not folder and path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(13, "Permission denied", str(path))
    except OSError as error:
        raise CLIError(
            f"{option} {path} cannot be written ({error.strerror or error}); choose a writable location. "
            "(Checked before training, so no work is lost.)"
        ) from None


def check_device(device: str, option: str = "--device") -> None:
    """Raise :class:`CLIError` if torch cannot use ``device`` (unknown name, no GPU)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise CLIError(f"{option} {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"{option} {device}: torch sees no CUDA GPU on this machine "
                           "(torch.cuda.is_available() is False); use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise CLIError(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                           f"numbered from 0")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise CLIError(f"{option} {device}: MPS is not available on this machine; use --device cpu")


def resume_command(argv: Sequence[str]) -> str:
    """The command line that resumes an interrupted ``train`` (the same one with ``--resume``)."""
    argv = list(argv)
    return shlex.join([PROG, *argv, *([] if "--resume" in argv else ["--resume"])])


# --------------------------------------------------------------- benchmarks
def build_benchmark(name: str, data_root: Optional[str], kwargs: Dict[str, Any]):
    """A benchmark by name: ``toy``/``toy-domain`` or any name of ``avalanche_mind.data.load_benchmark``."""
    if name == "toy":
        from avalanche_mind.data.toy import toy_class_incremental

        return toy_class_incremental(**kwargs)
    if name == "toy-domain":
        from avalanche_mind.data.toy import toy_domain_incremental

        return toy_domain_incremental(**kwargs)
    from avalanche_mind.data import load_benchmark

    try:
        return load_benchmark(name, data_root, **kwargs)
    except TypeError as error:
        raise CLIError(f"benchmark {name!r} does not accept these --benchmark-arg values: {error}") from error


def benchmark_names() -> List[str]:
    try:
        from avalanche_mind.data.real import BENCHMARKS

        return sorted(BENCHMARKS) + list(LOCAL_BENCHMARKS)
    except ImportError:  # pragma: no cover - data package incomplete
        return list(LOCAL_BENCHMARKS)


def benchmark_shape(benchmark) -> Dict[str, int]:
    """Number of classes and input channels/size of a benchmark."""
    stream = benchmark.train_stream
    n_classes = getattr(benchmark, "n_classes", None)
    if not isinstance(n_classes, int):
        classes = set()
        for experience in stream:
            classes.update(int(c) for c in experience.classes_in_this_experience)
        n_classes = max(classes) + 1
    x = stream[0].dataset[0][0]
    return {"num_classes": int(n_classes), "in_channels": int(x.shape[0]), "image_size": int(x.shape[-1])}


def build_model(name: str, num_classes: int, in_channels: int, image_size: int, kwargs: Dict[str, Any]):
    from avalanche_mind.layers import gate_model
    from avalanche_mind.models import ResNet, gresnet32, gresnet32_64, small_cnn

    if name == "auto":
        name = "gresnet32_64" if image_size >= 64 else "gresnet32"
    import warnings

    with warnings.catch_warnings():  # a zero width is reported by MIND, in one line
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors", category=UserWarning)
        try:
            if name == "gresnet32":
                return gresnet32(num_classes=num_classes, in_channels=in_channels, **kwargs)
            if name == "gresnet32_64":
                return gresnet32_64(num_classes=num_classes, in_channels=in_channels, **kwargs)
            if name == "small_cnn":
                return small_cnn(num_classes, in_channels=in_channels, **kwargs)
            if name == "resnet":
                return gate_model(ResNet(num_classes, in_channels=in_channels, **kwargs))
        except TypeError as error:
            raise CLIError(f"model {name!r} does not accept these --model-arg values: {error}") from error
        except (ValueError, RuntimeError, IndexError, ZeroDivisionError) as error:
            raise CLIError(f"model {name!r} cannot be built with --model-arg {kwargs}: {error}") from error
    raise CLIError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


# ------------------------------------------------------------------- parser
def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, max_help_position=34)


def _add_benchmark_arguments(parser: argparse.ArgumentParser, from_checkpoint: bool) -> None:
    group = parser.add_argument_group("benchmark")
    group.add_argument(
        "--benchmark",
        default=None,
        metavar="NAME",
        help="benchmark to use: " + ", ".join(benchmark_names())
        + (" (default: the one the checkpoint was trained on)" if from_checkpoint else ""),
    )
    group.add_argument(
        "--benchmark-arg",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="keyword argument of the benchmark builder, repeatable; e.g. n_experiences=5, "
        "train_per_class=50, seed=1 (glyphs), n_domains=3 (glyphs-domain)",
    )
    group.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="where datasets are (or are cached/downloaded); default: each benchmark's own location",
    )


def build_parser() -> argparse.ArgumentParser:
    from avalanche_mind.logging import add_wandb_arguments

    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=_formatter,
        description="MIND (Multi-Task Incremental Network Distillation) on Avalanche benchmarks.",
        epilog="Run `avalanche-mind <command> --help` for the options of each command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="<command>")
    commands.required = True

    # ---------------------------------------------------------------- train
    train = commands.add_parser(
        "train",
        formatter_class=_formatter,
        help="train MIND on a benchmark, with checkpoints and optional W&B logging",
        description="Train MIND on every experience of a benchmark's train stream, evaluating on the "
        "test stream after each one. Options left out take the --preset's value if one is given, "
        "else MIND's defaults (the paper's CIFAR-100 schedule; --paper for the paper's method exactly).",
    )
    _add_benchmark_arguments(train, from_checkpoint=False)
    train.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help="take benchmark, model and hyperparameters from benchmarks/presets.py (repository only); "
        "explicit options override it",
    )
    model = train.add_argument_group("model")
    model.add_argument(
        "--model",
        choices=MODELS,
        default=None,
        help="backbone: auto (gresnet32, or gresnet32_64 for 64x64 inputs), gresnet32, gresnet32_64, "
        "small_cnn, or resnet (configure with --model-arg blocks_per_stage=N); default: auto",
    )
    model.add_argument(
        "--model-arg", action="append", default=None, metavar="KEY=VALUE",
        help="keyword argument of the model builder, repeatable; e.g. width=8 for small_cnn",
    )
    mind = train.add_argument_group("MIND hyperparameters")
    mind.add_argument("--teacher-epochs", type=int, default=None, metavar="N",
                      help="epochs of the teacher phase (default 50)")
    mind.add_argument("--teacher-lr", type=float, default=None, metavar="LR",
                      help="AdamW learning rate of the teacher (default 0.005)")
    mind.add_argument("--teacher-milestones", type=_int_list, default=None, metavar="E1,E2",
                      help="teacher epochs at which the learning rate is multiplied by --lr-gamma (default 35)")
    mind.add_argument("--epochs", type=int, default=None, metavar="N",
                      help="epochs of the distillation phase (default 50)")
    mind.add_argument("--lr", type=float, default=None, metavar="LR",
                      help="AdamW learning rate of distillation (default 0.035)")
    mind.add_argument("--milestones", type=_int_list, default=None, metavar="E1,E2",
                      help="distillation epochs at which the learning rate is multiplied by --lr-gamma (default 40)")
    mind.add_argument("--lr-gamma", type=float, default=None, metavar="GAMMA",
                      help="learning-rate decay factor (default 0.5)")
    mind.add_argument("--weight-decay", type=float, default=None, metavar="WD",
                      help="AdamW weight decay, both phases (default 0)")
    mind.add_argument("--batch-size", type=int, default=None, metavar="N", help="training minibatch size (default 256)")
    mind.add_argument("--eval-batch-size", type=int, default=None, metavar="N",
                      help="evaluation minibatch size (default 512)")
    mind.add_argument("--beta", type=float, default=None, metavar="BETA",
                      help="weight of the distillation term (default 5)")
    mind.add_argument("--distill-loss", choices=("js", "kl", "cosine", "l2"), default=None,
                      help="distillation divergence (default js)")
    mind.add_argument("--temperature", type=float, default=None, metavar="T",
                      help="softmax temperature of the task-agnostic task choice (default 6.5)")
    mind.add_argument("--task-inference", choices=TASK_INFERENCE_RULES, default=None,
                      help="rule choosing the task without a task label (default: MIND's)")
    mind.add_argument("--rejection", choices=("none", "rotation"), default=None,
                      help="train-time rejection of foreign inputs (default: MIND's)")
    mind.add_argument("--new-weights", choices=("zero", "random"), default=None,
                      help="start of the weights given to experience t >= 1 (default zero, the authors')")
    mind.add_argument("--paper", action="store_true",
                      help="the paper's exact method (avalanche_mind.PAPER_SETTINGS) instead of MIND's defaults")
    mind.add_argument("--self-distillation", action=argparse.BooleanOptionalAction, default=None,
                      help="train the teacher in place on FREE weights, one network held (default: MIND's, on; "
                           "--no-self-distillation: a fresh teacher, the paper's MIND)")
    mind.add_argument("--no-weight-sharing", action="store_true",
                      help="sub-network t uses only t's weights, not those of tasks 0..t")
    mind.add_argument("--bn-first-task-only", action="store_true",
                      help="ablation: train BatchNorm on the first experience only")
    mind.add_argument("--capacity", default=None, metavar="equal|FRACTION",
                      help="weights given to each experience: 'equal' (numel / n_experiences, default) "
                      "or a fraction of the FREE weights, e.g. 0.2")
    run = train.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, metavar="SEED",
                     help="seed of model initialisation, allocation and data order (default 0)")
    run.add_argument("--device", default="cpu", metavar="DEVICE", help="torch device, e.g. cpu or cuda (default cpu)")
    run.add_argument("--checkpoint", default=None, metavar="PATH",
                     help="save MIND's whole state to PATH after every experience (atomic write)")
    run.add_argument("--resume", action="store_true",
                     help="continue from --checkpoint if it exists (same options as the interrupted run)")
    run.add_argument("--results", default=None, metavar="JSON",
                     help="write the final metrics and accuracy matrices to this JSON file")
    run.add_argument("--quiet", action="store_true",
                     help="print only the final line: no progress bars, no line per experience")
    add_wandb_arguments(train)

    # ------------------------------------------------------------- evaluate
    evaluate = commands.add_parser(
        "evaluate",
        formatter_class=_formatter,
        help="evaluate a checkpoint (TAw, TAg, task identification) on a benchmark's test stream",
        description="Load a checkpoint written by `avalanche-mind train` (or save_checkpoint) and report, "
        "per test experience, task-aware (TAw) and task-agnostic (TAg) accuracy and how often the "
        "task was identified. No strategy is built: this is avalanche_mind.predictor.Predictor.",
    )
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint file to evaluate")
    _add_benchmark_arguments(evaluate, from_checkpoint=True)
    evaluate.add_argument("--model", choices=MODELS, default=None,
                          help="backbone (default: the one recorded in the checkpoint)")
    evaluate.add_argument("--model-arg", action="append", default=None, metavar="KEY=VALUE",
                          help="keyword argument of the model builder, repeatable (default: recorded ones)")
    evaluate.add_argument("--temperature", type=float, default=None, metavar="T",
                          help="task-choice temperature (default: the trained strategy's)")
    evaluate.add_argument("--task-inference", choices=TASK_INFERENCE_RULES, default=None,
                          help="task-choice rule (default: the trained strategy's)")
    evaluate.add_argument("--batch-size", type=int, default=512, metavar="N",
                          help="evaluation minibatch size (default 512)")
    evaluate.add_argument("--device", default="cpu", metavar="DEVICE", help="torch device (default cpu)")
    evaluate.add_argument("--json", default=None, metavar="PATH", help="also write the results to this JSON file")
    evaluate.add_argument("--quiet", action="store_true",
                          help="print only the final line (no table of per-experience results)")

    # -------------------------------------------------------------- compare
    compare = commands.add_parser(
        "compare",
        add_help=False,
        formatter_class=_formatter,
        help="compare MIND with baselines (delegates to the repository's benchmarks/compare.py)",
        description="Run the comparison runner benchmarks/compare.py with the given arguments; "
        "`avalanche-mind compare --help` prints its own options.",
    )
    compare.add_argument("args", nargs=argparse.REMAINDER, help="arguments for benchmarks/compare.py")
    return parser


# --------------------------------------------------------------------- train
_PRESET_FIELDS = {
    # CLI option -> Preset field
    "teacher_epochs": "teacher_epochs",
    "teacher_lr": "teacher_lr",
    "teacher_milestones": "teacher_milestones",
    "epochs": "train_epochs",
    "lr": "lr",
    "milestones": "milestones",
    "lr_gamma": "lr_gamma",
    "weight_decay": "weight_decay",
    "batch_size": "batch_size",
    "eval_batch_size": "eval_batch_size",
    "beta": "beta",
    "temperature": "temperature",
}
_MIND_KWARGS = {
    "teacher_epochs": "teacher_epochs",
    "teacher_lr": "teacher_lr",
    "teacher_milestones": "teacher_milestones",
    "epochs": "train_epochs",
    "lr": "lr",
    "milestones": "milestones",
    "lr_gamma": "lr_gamma",
    "weight_decay": "weight_decay",
    "batch_size": "train_mb_size",
    "eval_batch_size": "eval_mb_size",
    "beta": "beta",
    "distill_loss": "distill_loss",
    "temperature": "temperature",
    "task_inference": "task_inference",
    "new_weights": "new_weights",
    "rejection": "rejection",
}


def _resolve_train(args: argparse.Namespace) -> Dict[str, Any]:
    """The run's settings: explicit options, else the preset's, else MIND's defaults."""
    settings: Dict[str, Any] = {
        "benchmark": args.benchmark,
        "benchmark_kwargs": _key_values(args.benchmark_arg, "--benchmark-arg"),
        "model": args.model,
        "model_kwargs": _key_values(args.model_arg, "--model-arg"),
    }
    preset = None
    if args.preset:
        try:
            preset = _repo_module("benchmarks.presets").get_preset(args.preset)
        except KeyError as error:
            raise CLIError(str(error).strip("'\"")) from error
        if settings["benchmark"] is None:
            settings["benchmark"] = preset.benchmark
            settings["benchmark_kwargs"] = {**dict(preset.benchmark_kwargs), **settings["benchmark_kwargs"]}
        if settings["model"] is None:
            settings["model"] = preset.model
            settings["model_kwargs"] = {**dict(preset.model_kwargs), **settings["model_kwargs"]}
    if settings["benchmark"] is None:
        raise CLIError("give --benchmark NAME (or --preset NAME)")
    settings["model"] = settings["model"] or "auto"
    from avalanche_mind.settings import PAPER_SETTINGS

    mind: Dict[str, Any] = dict(PAPER_SETTINGS) if args.paper else {}
    for option, keyword in _MIND_KWARGS.items():
        value = getattr(args, option)
        if value is None and preset is not None and option in _PRESET_FIELDS:
            value = getattr(preset, _PRESET_FIELDS[option])
        if value is not None:
            mind[keyword] = list(value) if isinstance(value, (list, tuple)) else value
    if args.capacity is not None:
        try:
            mind["capacity"] = "equal" if args.capacity == "equal" else float(args.capacity)
        except ValueError:
            raise CLIError(f"--capacity must be 'equal' or a fraction such as 0.2, got {args.capacity!r}") from None
    if mind.get("rejection") == "none":
        mind["rejection"] = None
    if args.self_distillation is not None:
        mind["self_distillation"] = args.self_distillation
    mind["weight_sharing"] = not args.no_weight_sharing
    mind["bn_per_task"] = not args.bn_first_task_only
    settings["mind"] = mind
    settings["preset"] = args.preset
    return settings


def _final_metrics(results: Dict[str, float]) -> Dict[str, float]:
    keys = {
        "TAg": "Top1_TAg_Acc_Stream/",
        "TAw": "Top1_TAw_Acc_Stream/",
        "TaskId": "Top1_TaskId_Acc_Stream/",
        "forgetting": "StreamForgetting/",
    }
    out = {}
    for short, prefix in keys.items():
        values = [float(v) for k, v in results.items() if k.startswith(prefix) and "test_stream" in k]
        if values:
            out[short] = values[0]
    return out


def cmd_train(args: argparse.Namespace) -> int:
    settings = _resolve_train(args)
    if args.resume and not args.checkpoint:
        raise CLIError("--resume needs --checkpoint PATH")
    if args.batch_size is not None and args.batch_size < 1:
        raise CLIError("--batch-size must be >= 1")
    # Everything that could fail after the work is checked before it starts.
    check_device(args.device)
    if args.checkpoint:
        check_writable(args.checkpoint.replace("{experience}", "0"), "--checkpoint")
    if args.results:
        check_writable(args.results, "--results")
    if getattr(args, "wandb", False) and getattr(args, "wandb_dir", None):
        check_writable(args.wandb_dir, "--wandb-dir", folder=True)

    import torch

    from avalanche_mind.checkpoint import CheckpointPlugin, load_checkpoint, read_checkpoint
    from avalanche_mind.logging import MINDWandBLogger, mind_evaluator, wandb_logger_from_args
    from avalanche_mind.strategy import MIND

    torch.manual_seed(args.seed)
    benchmark = build_benchmark(settings["benchmark"], args.data_root, settings["benchmark_kwargs"])
    shape = benchmark_shape(benchmark)
    model = build_model(settings["model"], shape["num_classes"], shape["in_channels"], shape["image_size"],
                        settings["model_kwargs"])
    train_stream, test_stream = benchmark.train_stream, benchmark.test_stream
    record = {
        "benchmark": settings["benchmark"],
        "benchmark_kwargs": settings["benchmark_kwargs"],
        "data_root": args.data_root,
        "model": settings["model"],
        "model_kwargs": settings["model_kwargs"],
        "num_classes": shape["num_classes"],
        "in_channels": shape["in_channels"],
        "image_size": shape["image_size"],
        "seed": args.seed,
        "preset": settings["preset"],
    }
    config = {"benchmark": {"name": settings["benchmark"], "n_experiences": len(train_stream),
                            **settings["benchmark_kwargs"], **shape},
              "model_builder": {"name": settings["model"], **settings["model_kwargs"]},
              "seed": args.seed, "preset": settings["preset"]}
    logger: Optional[MINDWandBLogger] = wandb_logger_from_args(args, config)
    plugins = []
    if args.checkpoint:
        plugins.append(CheckpointPlugin(args.checkpoint, extra={"cli": record}))
    strategy = MIND(
        model=model,
        n_experiences=len(train_stream),
        device=args.device,
        plugins=plugins,
        evaluator=mind_evaluator(logger, interactive=False),  # bars + one line per experience
        seed=args.seed,
        verbose=not args.quiet,
        **settings["mind"],
    )
    start = 0
    if args.resume and Path(args.checkpoint).is_file():
        saved = read_checkpoint(args.checkpoint).extra.get("cli", {})
        for key in ("benchmark", "benchmark_kwargs", "model", "model_kwargs", "seed"):
            if key in saved and saved[key] != record[key]:
                raise CLIError(
                    f"--resume: the checkpoint was trained with {key}={saved[key]!r}, this run asks for "
                    f"{record[key]!r}; use the interrupted run's options"
                )
        start = load_checkpoint(strategy, args.checkpoint).n_trained
        if not args.quiet:
            print(f"Resumed from {args.checkpoint}: {start} of {len(train_stream)} experiences trained.")
    elif args.resume and not args.quiet:
        print(f"No checkpoint at {args.checkpoint} yet: starting from the first experience.")

    results: Dict[str, float] = {}
    began = time.time()
    test_sizes = {int(e.current_experience): len(e.dataset) for e in test_stream}

    def saved_where() -> str:
        saved = plugins[0].last_saved if plugins else None
        if saved is None and args.checkpoint and Path(args.checkpoint).is_file():
            saved = Path(args.checkpoint)
        if saved is None:
            return "nothing was saved (no --checkpoint, or none written yet)"
        return f"the last checkpoint, {saved}, holds {read_trained(saved)} trained experience(s)"

    def read_trained(path) -> str:
        try:
            return str(read_checkpoint(path).n_trained)
        except Exception:  # noqa: BLE001 - a report, not a check
            return "?"

    try:
        for experience in train_stream[start:]:
            strategy.train(experience)
            results = strategy.eval(test_stream)
            if not args.quiet:
                done = strategy.state.n_tasks
                print(f"[{done}/{len(train_stream)}] " + _seen_summary(results, strategy.state.experience_ids,
                                                                      test_sizes))
        if start >= len(train_stream) and not results:
            results = strategy.eval(test_stream)
    except KeyboardInterrupt:
        print(f"\n{PROG} train: interrupted after {strategy.state.n_tasks} of {len(train_stream)} experiences; "
              f"{saved_where()}.", file=sys.stderr)
        if args.checkpoint:
            print(f"Resume with: {resume_command(getattr(args, 'argv', []))}", file=sys.stderr)
        return 130
    except OSError as error:
        where = f" {error.filename}" if error.filename else ""
        raise CLIError(f"could not write{where}: {error.strerror or error}; {saved_where()}"
                       + (f"; after freeing space, resume with: {resume_command(getattr(args, 'argv', []))}"
                          if args.checkpoint else "")) from error
    finally:
        if logger is not None:
            logger.finish()
    final = _final_metrics(results)
    print("final: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()) + f" ({time.time() - began:.1f} s)")
    if args.results:
        out = {"settings": settings, "record": record, "final": final,
               "metrics": {k: float(v) for k, v in results.items() if isinstance(v, (int, float))}}
        if logger is not None:
            out["accuracy_matrix"] = {k: logger.accuracy_matrix(k).tolist() for k in ("TAg", "TAw")}
        try:
            Path(args.results).parent.mkdir(parents=True, exist_ok=True)
            Path(args.results).write_text(json.dumps(out, indent=2, default=str))
        except OSError as error:
            raise CLIError(f"--results {args.results} could not be written ({error.strerror or error}); the "
                           "final figures are printed above" + (f" and the trained model is in {args.checkpoint}"
                                                                if args.checkpoint else "")) from error
    return 0


def _seen_summary(results: Dict[str, float], trained_ids: Sequence[int], sizes: Dict[int, int]) -> str:
    """TAg, TAw and TaskId over the trained test experiences only (sample-weighted, as the stream figures)."""
    values: Dict[str, List[float]] = {"TAg": [], "TAw": [], "TaskId": []}
    weights: Dict[str, List[int]] = {k: [] for k in values}
    trained = sorted(set(int(i) for i in trained_ids))
    for name, value in results.items():
        for kind in values:
            prefix = f"Top1_{kind}_Acc_Exp/eval_phase/test_stream/"
            if name.startswith(prefix) and "/Exp" in name:
                exp = int(name.rsplit("/Exp", 1)[1])
                if exp in trained:
                    values[kind].append(float(value) * sizes.get(exp, 1))
                    weights[kind].append(sizes.get(exp, 1))
    cells = [f"{k} {sum(v) / sum(weights[k]):.4f}" for k, v in values.items() if weights[k]]
    n = len(trained)
    return ", ".join(cells) + f" (on the {n} trained test experience{'s' if n != 1 else ''})"


# ------------------------------------------------------------------ evaluate
def _few_classes(classes) -> str:
    classes = list(classes)
    return str(classes) if len(classes) <= 8 else f"[{', '.join(map(str, classes[:8]))}, ... ({len(classes)} classes)]"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from avalanche_mind.checkpoint import read_checkpoint
    from avalanche_mind.predictor import Predictor

    check_device(args.device)
    if args.json:
        check_writable(args.json, "--json")
    record = read_checkpoint(args.checkpoint).extra.get("cli", {})
    name = args.benchmark or record.get("benchmark")
    if name is None:
        raise CLIError(f"{args.checkpoint} does not record its benchmark: give --benchmark NAME")
    bench_kwargs = _key_values(args.benchmark_arg, "--benchmark-arg") if args.benchmark_arg else dict(
        record.get("benchmark_kwargs", {}) if name == record.get("benchmark") else {}
    )
    data_root = args.data_root if args.data_root is not None else record.get("data_root")
    benchmark = build_benchmark(name, data_root, bench_kwargs)
    shape = benchmark_shape(benchmark)
    model_name = args.model or record.get("model", "auto")
    model_kwargs = _key_values(args.model_arg, "--model-arg") if args.model_arg else dict(
        record.get("model_kwargs", {}) if model_name == record.get("model", "auto") else {}
    )
    model = build_model(model_name, int(record.get("num_classes", shape["num_classes"])),
                        int(record.get("in_channels", shape["in_channels"])), shape["image_size"], model_kwargs)
    predictor = Predictor.from_checkpoint(args.checkpoint, model, device=args.device,
                                          temperature=args.temperature, task_inference=args.task_inference)
    from avalanche_mind.strategy import experience_classes

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
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"experiences": rows, "summary": summary,
                                               "checkpoint": str(args.checkpoint)}, indent=2))
    return 0


# ------------------------------------------------------------------- compare
def cmd_compare(argv: List[str], parser: argparse.ArgumentParser) -> int:
    wants_help = any(a in ("-h", "--help") for a in argv)
    try:
        compare = _repo_module("benchmarks.compare")
    except CLIError as error:
        if wants_help:
            print(f"usage: {PROG} compare [ARGS...]\n\nCompares MIND with baselines by running the "
                  f"repository's benchmarks/compare.py with ARGS.\n\n{error}")
            return 0
        raise
    if not hasattr(compare, "main"):
        raise CLIError("benchmarks/compare.py has no main(argv) function")
    result = compare.main(list(argv))
    return int(result or 0)


# ---------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``avalanche-mind`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] == "compare":
        try:
            return cmd_compare(argv[1:], parser)
        except CLIError as error:
            print(f"{PROG} compare: error: {error}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    args.argv = argv
    from avalanche_mind.checkpoint import CheckpointError
    from avalanche_mind.errors import TrainingDivergedError

    try:
        from avalanche_mind.data.real import DatasetNotAvailableError
    except ImportError:  # pragma: no cover
        DatasetNotAvailableError = FileNotFoundError  # noqa: N806
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate}
    try:
        return handlers[args.command](args)
    except (CLIError, CheckpointError, DatasetNotAvailableError, FileNotFoundError, ValueError) as error:
        # User errors (bad option values, unknown names, missing or mismatched files) are
        # reported as one line; the library raises ValueError for those by convention.
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except TrainingDivergedError as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
