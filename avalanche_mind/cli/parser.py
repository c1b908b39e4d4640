"""The ``avalanche-mind`` parser: every option of ``train`` and ``evaluate``; ``compare`` hands its own on.

Defaults quoted in the help are read from :data:`avalanche_mind.core.config.DEFAULTS`, the
one place MIND's defaults are written, and every list of names from :mod:`avalanche_mind.settings`:
neither needs torch. A command's options are added only when that command runs
(:func:`build_parser`'s ``commands``), so ``avalanche-mind --help`` reads no command module.
"""
from __future__ import annotations

import argparse
from typing import Callable, Dict, Iterable, Optional

from avalanche_mind.cli.options import PROG, add_benchmark_arguments, add_recorded_model_arguments, formatter, int_list
from avalanche_mind.core.config import DEFAULTS
from avalanche_mind.logging.wandb_options import add_wandb_arguments
from avalanche_mind.preflight import OneLineParser
from avalanche_mind.settings import (
    DEFAULT_TIMEOUT_S,
    DISTILL_LOSS_NAMES,
    MODEL_NAMES,
    NEGATIVE_SOURCES,
    NEW_WEIGHTS,
    PAPER_SETTINGS,
    REJECTIONS,
    TASK_INFERENCE_RULES,
)

COMMAND_HELP = {
    "train": "train MIND on a benchmark, with checkpoints and optional W&B logging",
    "evaluate": "evaluate a checkpoint (TAw, TAg, task identification) on a benchmark's test stream",
    "compare": "compare MIND with Avalanche's baselines on one benchmark (the comparison runner)",
    "export": "export a checkpoint to ONNX, torch.export or TorchScript (one sub-network or all), verified against "
              "the Predictor",
}
"""Every command and its line in ``avalanche-mind --help``."""


def _default(name: str) -> str:
    """MIND's default for ``name`` as the help shows it: 0.005, 35 or 70,90, js, none, on."""
    value = DEFAULTS[name]
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _add_train(commands) -> None:
    train = commands.add_parser(
        "train",
        formatter_class=formatter,
        help=COMMAND_HELP["train"],
        description="Train MIND on every experience of a benchmark's train stream, evaluating on the "
        "test stream after each one. Options left out take the --preset's value if one is given, "
        "else MIND's defaults (the paper's CIFAR-100 schedule; --paper for the paper's method exactly). "
        "With a preset and a seed it gives the figures of the comparison runner's mind row.",
        epilog="Data-parallel on several GPUs or CPU processes (one MIND run, each rank trains on its shard of "
        "every experience; gradients and BatchNorm statistics are averaged across ranks; rank 0 alone prints, "
        "writes --results, checkpoints and logs to W&B): torchrun --nproc_per_node N -m avalanche_mind.cli "
        "train ... (or torchrun --nproc_per_node N $(which avalanche-mind) train ...). --batch-size is per rank: "
        "the global batch is N times it. NCCL on cuda, gloo on cpu.",
    )
    add_benchmark_arguments(train, from_checkpoint=False)
    train.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help="take benchmark, model and hyperparameters from a comparison preset "
        "(avalanche-mind compare --list-presets); explicit options override it",
    )
    model = train.add_argument_group("model")
    model.add_argument(
        "--model",
        choices=MODEL_NAMES,
        default=None,
        help=f"backbone: {', '.join(MODEL_NAMES)}; auto (the default) is gresnet32, or gresnet32_64 for 64x64 "
        "inputs; resnet is configured with --model-arg blocks_per_stage=N",
    )
    model.add_argument(
        "--model-arg", action="append", default=None, metavar="KEY=VALUE",
        help="keyword argument of the model builder, repeatable; e.g. width=8 for small_cnn",
    )
    mind = train.add_argument_group("MIND hyperparameters")
    mind.add_argument("--teacher-epochs", type=int, default=None, metavar="N",
                      help=f"epochs of the teacher phase (default {_default('teacher_epochs')})")
    mind.add_argument("--teacher-lr", type=float, default=None, metavar="LR",
                      help=f"AdamW learning rate of the teacher (default {_default('teacher_lr')})")
    mind.add_argument("--teacher-milestones", type=int_list, default=None, metavar="E1,E2",
                      help="teacher epochs at which the learning rate is multiplied by --lr-gamma "
                           f"(default {_default('teacher_milestones')})")
    mind.add_argument("--epochs", type=int, default=None, metavar="N",
                      help=f"epochs of the distillation phase (default {_default('train_epochs')})")
    mind.add_argument("--lr", type=float, default=None, metavar="LR",
                      help=f"AdamW learning rate of distillation (default {_default('lr')})")
    mind.add_argument("--milestones", type=int_list, default=None, metavar="E1,E2",
                      help="distillation epochs at which the learning rate is multiplied by --lr-gamma "
                           f"(default {_default('milestones')})")
    mind.add_argument("--lr-gamma", type=float, default=None, metavar="GAMMA",
                      help=f"learning-rate decay factor (default {_default('lr_gamma')})")
    mind.add_argument("--weight-decay", type=float, default=None, metavar="WD",
                      help=f"AdamW weight decay, both phases (default {_default('weight_decay')})")
    mind.add_argument("--batch-size", type=int, default=None, metavar="N",
                      help=f"training minibatch size (default {_default('train_mb_size')})")
    mind.add_argument("--eval-batch-size", type=int, default=None, metavar="N",
                      help=f"evaluation minibatch size (default {_default('eval_mb_size')})")
    mind.add_argument("--beta", type=float, default=None, metavar="BETA",
                      help=f"weight of the distillation term (default {_default('beta')})")
    mind.add_argument("--distill-loss", choices=DISTILL_LOSS_NAMES, default=None,
                      help=f"distillation divergence (default {_default('distill_loss')})")
    mind.add_argument("--temperature", type=float, default=None, metavar="T",
                      help=f"softmax temperature of the task-agnostic task choice (default {_default('temperature')})")
    mind.add_argument("--task-inference", choices=TASK_INFERENCE_RULES, default=None,
                      help=f"rule choosing the task without a task label (default {_default('task_inference')})")
    mind.add_argument("--rejection", choices=tuple(r or "none" for r in REJECTIONS), default=None,
                      help=f"train-time rejection of foreign inputs (default {_default('rejection')})")
    mind.add_argument("--negatives", choices=tuple(n or "none" for n in NEGATIVE_SOURCES), default=None,
                      help="cross-task negatives shown with a uniform target in both phases "
                           f"(default {_default('negatives')})")
    mind.add_argument("--negative-weight", type=float, default=None, metavar="W",
                      help=f"weight of the negatives' term (default {_default('negative_weight')})")
    mind.add_argument("--negative-memory", type=int, default=None, metavar="K",
                      help="rehearsal reference, not exemplar-free: K real images per class kept and used "
                           f"only as negatives (default {_default('negative_memory')}; 0 is off)")
    mind.add_argument("--new-weights", choices=NEW_WEIGHTS, default=None,
                      help=f"start of the weights given to experience t >= 1 (default {_default('new_weights')}; "
                           f"the authors': {PAPER_SETTINGS['new_weights']})")
    mind.add_argument("--paper", action="store_true",
                      help="the paper's exact method (avalanche_mind.PAPER_SETTINGS) instead of MIND's defaults")
    mind.add_argument("--self-distillation", action=argparse.BooleanOptionalAction, default=None,
                      help="train the teacher in place on FREE weights, one network held (default "
                           f"{_default('self_distillation')}; --no-self-distillation: a fresh teacher, the paper's "
                           "MIND)")
    mind.add_argument("--no-weight-sharing", action="store_true",
                      help="sub-network t uses only t's weights, not those of tasks 0..t")
    mind.add_argument("--bn-first-task-only", action="store_true",
                      help="ablation: train BatchNorm on the first experience only")
    mind.add_argument("--capacity", default=None, metavar="equal|FRACTION",
                      help="weights given to each experience: 'equal' (numel / n_experiences) or a fraction "
                      f"of the FREE weights, e.g. 0.2 (default {_default('capacity')})")
    run = train.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, metavar="SEED",
                     help="seed of model initialisation, allocation and data order (default 0)")
    run.add_argument("--device", default="cpu", metavar="DEVICE", help="torch device, e.g. cpu or cuda (default cpu)")
    run.add_argument("--threads", type=int, default=None, metavar="N",
                     help="torch CPU threads (default: 1 on cpu, as the comparison runner, whose figures depend "
                          "on the count; torch's default on GPU)")
    run.add_argument("--checkpoint", default=None, metavar="PATH",
                     help="save MIND's whole state to PATH after every experience (atomic write)")
    run.add_argument("--resume", action="store_true",
                     help="continue from --checkpoint if it exists (same options as the interrupted run)")
    run.add_argument("--results", default=None, metavar="JSON",
                     help="write the final metrics and accuracy matrices to this JSON file")
    run.add_argument("--quiet", action="store_true",
                     help="print only the final line: no progress bars, no line per experience")
    run.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                     help="under torchrun: how long a rank waits for the others before failing with an error, "
                          "e.g. when one froze (default %(default)g; torch's own is 1800)")
    add_wandb_arguments(train)


def _add_evaluate(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        formatter_class=formatter,
        help=COMMAND_HELP["evaluate"],
        description="Load a checkpoint written by `avalanche-mind train` (or save_checkpoint) and report, "
        "per test experience, task-aware (TAw) and task-agnostic (TAg) accuracy and how often the "
        "task was identified. No strategy is built: this is avalanche_mind.inference.predictor.Predictor.",
    )
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint file to evaluate")
    add_benchmark_arguments(evaluate, from_checkpoint=True)
    add_recorded_model_arguments(evaluate)
    evaluate.add_argument("--temperature", type=float, default=None, metavar="T",
                          help="task-choice temperature (default: the trained strategy's)")
    evaluate.add_argument("--task-inference", choices=TASK_INFERENCE_RULES, default=None,
                          help="task-choice rule (default: the trained strategy's)")
    evaluate.add_argument("--batch-size", type=int, default=DEFAULTS["eval_mb_size"], metavar="N",
                          help="evaluation minibatch size (default %(default)s)")
    evaluate.add_argument("--device", default="cpu", metavar="DEVICE", help="torch device (default cpu)")
    evaluate.add_argument("--json", default=None, metavar="PATH", help="also write the results to this JSON file")
    evaluate.add_argument("--quiet", action="store_true",
                          help="print only the final line (no table of per-experience results)")


def _add_compare(commands) -> None:
    compare = commands.add_parser(
        "compare",
        add_help=False,
        formatter_class=formatter,
        help=COMMAND_HELP["compare"],
        description="Run the comparison runner (avalanche_mind.runner) with the given arguments; "
        "`avalanche-mind compare --help` prints its own options.",
    )
    compare.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the comparison runner")


def _add_export(commands) -> None:
    from avalanche_mind.cli.export import add_export_arguments  # torch: only when export's options are built

    export = commands.add_parser(
        "export",
        formatter_class=formatter,
        help=COMMAND_HELP["export"],
        description="Write one sub-network (--task T) or the whole task-agnostic predictor (--task all) as ONNX, "
        "torch.export (.pt2) or TorchScript; the file is run back and compared with the Predictor before it is kept.",
    )
    add_export_arguments(export)


_COMMANDS: Dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "train": _add_train, "evaluate": _add_evaluate, "compare": _add_compare, "export": _add_export,
}
"""Each command -> what adds its sub-parser with all its options (export's alone imports torch)."""


def build_parser(commands: Optional[Iterable[str]] = None) -> argparse.ArgumentParser:
    """The ``avalanche-mind`` parser with its ``train``, ``evaluate``, ``compare`` and ``export`` commands.

    ``commands``: the commands whose options are built (None: every one); the others are
    listed by name and help line only, so ``avalanche-mind --help`` imports no command.
    """
    parser = OneLineParser(
        prog=PROG,
        formatter_class=formatter,
        description="MIND (Multi-Task Incremental Network Distillation) on Avalanche benchmarks.",
        epilog="Run `avalanche-mind <command> --help` for the options of each command.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    subparsers.required = True
    wanted = set(_COMMANDS if commands is None else commands)
    for name, add in _COMMANDS.items():
        if name in wanted:
            add(subparsers)
        else:
            subparsers.add_parser(name, help=COMMAND_HELP[name], add_help=False)
    return parser
