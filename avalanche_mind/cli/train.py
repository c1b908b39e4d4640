"""``avalanche-mind train``: MIND on every experience of a benchmark, with checkpoints, resume and W&B.

The run's MIND keywords come from the options (read under MIND's own names), else
``--paper``'s (the paper's method), else the ``--preset``'s values, else MIND's defaults
(:func:`~avalanche_mind.core.config.resolve_settings`, as the runner orders them).
With the same preset and seed it reproduces the
comparison runner's ``mind`` row figure for figure: both seed, build and set their
threads through :mod:`avalanche_mind.runner.reproducible`.

Under ``torchrun --nproc_per_node N`` it trains data-parallel
(:mod:`avalanche_mind.core.distributed`): every rank joins the process group before
anything is built; rank 0 alone prints, writes ``--results``, checkpoints and logs to W&B.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist

from avalanche_mind.cli.builders import benchmark_shape, build_benchmark, build_model
from avalanche_mind.cli.options import MIND_OPTIONS, PROG, key_values
from avalanche_mind.core.config import MINDConfig, resolve_settings
from avalanche_mind.core.distributed import init_from_environment, is_distributed, is_main_process
from avalanche_mind.core.strategy import MIND
from avalanche_mind.inference.metrics import mind_evaluator
from avalanche_mind.io.checkpoint import CheckpointError, CheckpointPlugin, load_checkpoint, read_checkpoint
from avalanche_mind.io.files import atomic_write_text
from avalanche_mind.io.locking import OutputBusy, OutputLock
from avalanche_mind.logging.wandb_logger import MINDWandBLogger, check_wandb_names, wandb_logger_from_args
from avalanche_mind.preflight import CLIError, check_device, check_writable
from avalanche_mind.runner.presets import get_preset
from avalanche_mind.runner.reproducible import seed_everything, set_threads


def resume_command(argv: Sequence[str]) -> str:
    """The command line that resumes an interrupted ``train`` (the same one with ``--resume``)."""
    argv = list(argv)
    return shlex.join([PROG, *argv, *([] if "--resume" in argv else ["--resume"])])


def _plain(value: Any) -> Any:
    """Lists for milestones (as JSON and the checkpoint's record hold them)."""
    return list(value) if isinstance(value, (list, tuple)) else value


def resolve_train(args: argparse.Namespace) -> Dict[str, Any]:
    """The run's settings: explicit options, else ``--paper``'s, else the preset's, else MIND's defaults."""
    settings: Dict[str, Any] = {
        "benchmark": args.benchmark,
        "benchmark_kwargs": key_values(args.benchmark_arg, "--benchmark-arg"),
        "model": args.model,
        "model_kwargs": key_values(args.model_arg, "--model-arg"),
    }
    preset_keywords: Dict[str, Any] = {}
    if args.preset:
        try:
            preset = get_preset(args.preset)
        except KeyError as error:
            raise CLIError(str(error).strip("'\"")) from error
        if settings["benchmark"] is None:
            settings["benchmark"] = preset.benchmark
            settings["benchmark_kwargs"] = {**dict(preset.benchmark_kwargs), **settings["benchmark_kwargs"]}
        if settings["model"] is None:
            settings["model"] = preset.model
            settings["model_kwargs"] = {**dict(preset.model_kwargs), **settings["model_kwargs"]}
        # As the runner's rows: ``mind`` takes the preset's mind_kwargs too, ``mind-paper`` does not.
        preset_keywords = preset.mind_keywords(paper=args.paper)
    if settings["benchmark"] is None:
        raise CLIError("give --benchmark NAME (or --preset NAME)")
    settings["model"] = settings["model"] or "auto"
    options: Dict[str, Any] = {}
    for f in dataclasses.fields(MINDConfig):  # every MIND keyword with an option of its own
        value = getattr(args, MIND_OPTIONS.get(f.name, f.name), None)
        if value is not None and f.name != "capacity":
            options[f.name] = value
    if args.capacity is not None:
        try:
            options["capacity"] = "equal" if args.capacity == "equal" else float(args.capacity)
        except ValueError:
            raise CLIError(f"--capacity must be 'equal' or a fraction such as 0.2, got {args.capacity!r}") from None
    for key in ("rejection", "negatives"):
        if options.get(key) == "none":
            options[key] = None
    if args.no_weight_sharing:
        options["weight_sharing"] = False
    if args.bn_first_task_only:
        options["bn_per_task"] = False
    mind = resolve_settings(preset_keywords, args.paper, options)
    settings["mind"] = {key: _plain(value) for key, value in mind.items()}
    settings["preset"] = args.preset
    return settings


def final_metrics(results: Dict[str, float]) -> Dict[str, float]:
    """The test stream's TAg, TAw, TaskId and forgetting from ``eval``'s results."""
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
    """Train MIND on every experience, evaluating after each; checkpoint, resume and W&B as asked."""
    settings = resolve_train(args)
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
    check_wandb_names(args)
    if args.dist_timeout <= 0:
        raise CLIError("--dist-timeout must be > 0 seconds")
    lock = None
    if args.checkpoint and os.environ.get("RANK", "0") == "0":  # under torchrun rank 0 alone writes it
        try:
            lock = OutputLock(args.checkpoint, "--checkpoint").acquire()
        except OutputBusy as error:
            raise CLIError(str(error)) from None
    try:
        return _train(args, settings)
    finally:
        if lock is not None:
            lock.release()


def _train(args: argparse.Namespace, settings: Dict[str, Any]) -> int:
    set_threads(args.threads, args.device)
    init_from_environment(args.seed, args.device, args.dist_timeout)  # under torchrun: join the process group first
    main = is_main_process()
    quiet = args.quiet or not main
    benchmark = build_benchmark(settings["benchmark"], args.data_root, settings["benchmark_kwargs"])
    shape = benchmark_shape(benchmark)
    seed_everything(args.seed)  # as the runner: after the benchmark, before the model and MIND
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
        "world_size": dist.get_world_size() if is_distributed() else 1,
        "torch_threads": torch.get_num_threads(),
    }
    config = {"benchmark": {"name": settings["benchmark"], "n_experiences": len(train_stream),
                            **settings["benchmark_kwargs"], **shape},
              "model_builder": {"name": settings["model"], **settings["model_kwargs"]},
              "seed": args.seed, "preset": settings["preset"]}
    logger: Optional[MINDWandBLogger] = wandb_logger_from_args(args, config) if main else None
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
        verbose=not quiet,
        **settings["mind"],
    )
    start, pending_eval = 0, False
    if args.resume and Path(args.checkpoint).is_file():
        saved = read_checkpoint(args.checkpoint).extra.get("cli", {})
        for key in ("benchmark", "benchmark_kwargs", "model", "model_kwargs", "seed"):
            if key in saved and saved[key] != record[key]:
                raise CLIError(
                    f"--resume: the checkpoint was trained with {key}={saved[key]!r}, this run asks for "
                    f"{record[key]!r}; use the interrupted run's options"
                )
        try:
            resumed = load_checkpoint(strategy, args.checkpoint)
        except CheckpointError as error:
            raise CLIError(f"--resume: {str(error).split('. Build MIND with')[0]}; resume with the interrupted "
                           "run's options (no option of this command overrides a checkpoint's settings), or "
                           "start anew with another --checkpoint") from None
        start, pending_eval = resumed.n_trained, resumed.evaluation_pending
        if not quiet:
            print(f"Resumed from {args.checkpoint}: {start} of {len(train_stream)} experiences trained.")
    elif args.resume and not quiet:
        print(f"No checkpoint at {args.checkpoint} yet: starting from the first experience.")

    results: Dict[str, float] = {}
    began = time.time()
    test_sizes = {int(e.current_experience): len(e.dataset) for e in test_stream}

    def saved_where() -> str:
        saved = plugins[0].last_saved if plugins else None
        if saved is None and args.checkpoint and Path(args.checkpoint).is_file():
            saved = Path(args.checkpoint)
        if saved is None:
            return (f"no checkpoint was written yet ({args.checkpoint} does not exist)" if args.checkpoint
                    else "nothing was saved (no --checkpoint)")
        return f"the last checkpoint, {saved}, holds {read_trained(saved)} trained experience(s)"

    def read_trained(path) -> str:
        try:
            return str(read_checkpoint(path).n_trained)
        except Exception:  # noqa: BLE001 - a report, not a check
            return "?"

    try:
        if pending_eval:  # killed in the evaluation after the checkpoint: its metrics (forgetting's) are needed
            results = strategy.eval(test_stream)
        for experience in train_stream[start:]:
            train_one(strategy, experience, args)
            results = strategy.eval(test_stream)
            if not quiet:
                done = strategy.state.n_tasks
                print(f"[{done}/{len(train_stream)}] " + seen_summary(results, strategy.state.experience_ids,
                                                                     test_sizes))
        if start >= len(train_stream) and not pending_eval:
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
        if is_distributed():
            dist.destroy_process_group()
    if not main:
        return 0
    final = final_metrics(results)
    print("final: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()) + f" ({time.time() - began:.1f} s)")
    if args.results:
        out = {"settings": settings, "record": record, "final": final,
               "metrics": {k: float(v) for k, v in results.items() if isinstance(v, (int, float))}}
        if logger is not None:
            out["accuracy_matrix"] = {k: logger.accuracy_matrix(k).tolist() for k in ("TAg", "TAw")}
        try:
            atomic_write_text(args.results, json.dumps(out, indent=2, default=str))
        except OSError as error:
            raise CLIError(f"--results {args.results} could not be written ({error.strerror or error}); the "
                           "final figures are printed above" + (f" and the trained model is in {args.checkpoint}"
                                                                if args.checkpoint else "")) from error
    return 0


def train_one(strategy: MIND, experience, args: argparse.Namespace) -> None:
    """``strategy.train(experience)`` (a float32 overflow is MIND's own ``TrainingDivergedError``)."""
    strategy.train(experience)


def seen_summary(results: Dict[str, float], trained_ids: Sequence[int], sizes: Dict[int, int]) -> str:
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
