"""Checkpoint after every experience, resume after an interruption, predict without a strategy.

First run (stopped on purpose after one experience)::

    python examples/resume_from_checkpoint.py --stop-after 1

Second run: the same command without ``--stop-after`` finds the checkpoint and
trains only the remaining experiences; the result is identical to a run never
interrupted. At the end the checkpoint is loaded into a bare model by
``Predictor``, with no strategy, for task-aware and task-agnostic predictions.
"""
import argparse
import os
from pathlib import Path

import torch

from avalanche_mind import MIND, small_cnn
from avalanche_mind.io.checkpoint import CheckpointPlugin, load_checkpoint
from avalanche_mind.data import glyph_class_incremental
from avalanche_mind.inference.metrics import mind_evaluator
from avalanche_mind.inference.predictor import Predictor
from avalanche_mind.logging.wandb_logger import add_wandb_arguments, wandb_logger_from_args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", default=os.environ.get("AVALANCHE_MIND_SMALL") == "1",
                        help="tiny sizes for a smoke run (also: AVALANCHE_MIND_SMALL=1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (for scripts and logs)")
    parser.add_argument("--checkpoint", default="mind-glyphs.pt", help="checkpoint file (default: %(default)s)")
    parser.add_argument("--stop-after", type=int, default=None, metavar="K",
                        help="simulate an interruption: stop once K experiences are trained")
    add_wandb_arguments(parser)  # --wandb: the resumed run continues the W&B curves (logger state is checkpointed)
    args = parser.parse_args()
    n_exp, n_classes, per_class, epochs = (3, 6, 20, 2) if args.small else (5, 20, 100, 10)

    torch.manual_seed(0)
    benchmark = glyph_class_incremental(n_experiences=n_exp, n_classes=n_classes, train_per_class=per_class,
                                        test_per_class=per_class // 2, image_size=32)
    logger = wandb_logger_from_args(args, config={"benchmark": "glyphs"})  # None without --wandb
    strategy = MIND(model=small_cnn(n_classes), n_experiences=n_exp, train_mb_size=32, teacher_epochs=epochs,
                    train_epochs=epochs, milestones=[], teacher_milestones=[], seed=0, verbose=not args.quiet,
                    plugins=[CheckpointPlugin(args.checkpoint)],  # saved atomically after every experience
                    evaluator=mind_evaluator(logger, interactive=False))
    if Path(args.checkpoint).is_file():
        done = load_checkpoint(strategy, args.checkpoint).n_trained  # weights, ownership, BN, RNGs, ...
        print(f"resuming: {done} of {n_exp} experiences already trained")
    for experience in benchmark.train_stream[strategy.state.n_tasks:]:
        strategy.train(experience)
        results = strategy.eval(benchmark.test_stream)
        print(f"trained experience {experience.current_experience}: "
              f"TAg {results['Top1_TAg_Acc_Stream/eval_phase/test_stream/Task000']:.3f}")
        if args.stop_after is not None and strategy.state.n_tasks >= args.stop_after:
            print(f"stopping after {strategy.state.n_tasks} experiences; run again to resume")
            break
    if logger is not None:
        logger.finish()
    if strategy.state.n_tasks < n_exp:
        return

    # Inference without a strategy: the user supplies the architecture.
    predictor = Predictor.from_checkpoint(args.checkpoint, small_cnn(n_classes))
    x, y = next(iter(torch.utils.data.DataLoader(benchmark.test_stream[0].dataset.eval(), batch_size=8)))[:2]
    tag = predictor.predict(x)           # task-agnostic: the task is inferred
    taw = predictor.predict(x, task=0)   # task-aware: sub-network of task 0
    print("labels          ", y.tolist())
    print("TAg classes     ", tag.classes.tolist(), "chosen tasks", tag.tasks.tolist())
    print("TAw classes (t0)", taw.classes.tolist())


if __name__ == "__main__":
    main()
