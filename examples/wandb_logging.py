"""Log a MIND run to Weights & Biases (offline by default: no account or network needed).

Logged: the configuration, TAg/TAw/task-identification accuracy and forgetting per
experience, the teacher and distillation loss curves, the accuracy matrix (table
and heatmap) and the capacity used per layer. Later, ``wandb sync <run folder>``
uploads an offline run (the script prints the folder). Run
``python examples/wandb_logging.py [--small] [--wandb-mode online --wandb-project my-project ...]``.
"""
import argparse
import os

import torch

from avalanche_mind import MIND, small_cnn
from avalanche_mind.data import glyph_class_incremental
from avalanche_mind.inference.metrics import mind_evaluator
from avalanche_mind.logging.wandb_logger import add_wandb_arguments, wandb_logger_from_args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", default=os.environ.get("AVALANCHE_MIND_SMALL") == "1",
                        help="tiny sizes for a smoke run (also: AVALANCHE_MIND_SMALL=1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (for scripts and logs)")
    add_wandb_arguments(parser)  # --wandb, --wandb-project, --wandb-entity, --wandb-run-name, --wandb-tags, ...
    parser.set_defaults(wandb=True, wandb_mode="offline", wandb_run_name="glyphs-example")
    args = parser.parse_args()
    n_exp, n_classes, per_class, epochs = (3, 6, 20, 2) if args.small else (5, 20, 100, 10)
    torch.manual_seed(0)

    benchmark = glyph_class_incremental(n_experiences=n_exp, n_classes=n_classes, train_per_class=per_class,
                                        test_per_class=per_class // 2, image_size=32)
    logger = wandb_logger_from_args(args, config={"benchmark": {"name": "glyphs", "n_experiences": n_exp,
                                                                "n_classes": n_classes, "train_per_class": per_class}})
    strategy = MIND(model=small_cnn(n_classes), n_experiences=n_exp, train_mb_size=32, teacher_epochs=epochs,
                    train_epochs=epochs, milestones=[], teacher_milestones=[], seed=0, verbose=not args.quiet,
                    evaluator=mind_evaluator(logger, interactive=False))
    for experience in benchmark.train_stream:
        strategy.train(experience)
        strategy.eval(benchmark.test_stream)
    print("TAw accuracy matrix (row i: after experience i; column j: test experience j):")
    print(logger.accuracy_matrix("TAw").round(3))
    logger.finish()

    if args.wandb_mode == "offline":
        print(f"offline run in {logger.run_dir}; upload it with: wandb sync {logger.run_dir}")


if __name__ == "__main__":
    main()
