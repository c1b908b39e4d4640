"""Bring your own network: any model built from Conv2d/Linear (and BatchNorm) layers.

``gate_model`` turns its Conv2d/Linear layers into gated twins in place, so MIND
can give each experience its own slice of every weight tensor. The last Linear
layer is the classifier. Run ``python examples/own_model.py [--small]``.
"""
import argparse
import os

import torch
from torch import nn

from avalanche_mind import MIND, gate_model
from avalanche_mind.data import glyph_class_incremental
from avalanche_mind.inference.metrics import mind_evaluator
from avalanche_mind.logging.wandb_logger import add_wandb_arguments, wandb_logger_from_args


class MyNet(nn.Module):
    """A user's network: nothing MIND-specific in it."""

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes, bias=False)  # bias-free, as in the paper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", default=os.environ.get("AVALANCHE_MIND_SMALL") == "1",
                        help="tiny sizes for a smoke run (also: AVALANCHE_MIND_SMALL=1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (for scripts and logs)")
    add_wandb_arguments(parser)  # --wandb [--wandb-mode offline --wandb-project ...]: log to W&B
    args = parser.parse_args()
    n_exp, n_classes, per_class, epochs, width = (3, 6, 20, 2, 8) if args.small else (5, 20, 100, 10, 32)
    torch.manual_seed(0)

    benchmark = glyph_class_incremental(n_experiences=n_exp, n_classes=n_classes, train_per_class=per_class,
                                        test_per_class=per_class // 2, image_size=32)
    model = gate_model(MyNet(n_classes, width))  # in place; returns the model
    logger = wandb_logger_from_args(args, config={"benchmark": "glyphs", "model": "MyNet"})  # None without --wandb
    strategy = MIND(model=model, n_experiences=n_exp, train_mb_size=32, teacher_epochs=epochs,
                    train_epochs=epochs, milestones=[], teacher_milestones=[], seed=0, verbose=not args.quiet,
                    evaluator=mind_evaluator(logger, interactive=False))
    for experience in benchmark.train_stream:
        strategy.train(experience)
        results = strategy.eval(benchmark.test_stream)
        print(f"after experience {experience.current_experience}: "
              f"TAw {results['Top1_TAw_Acc_Stream/eval_phase/test_stream/Task000']:.3f}  "
              f"TAg {results['Top1_TAg_Acc_Stream/eval_phase/test_stream/Task000']:.3f}")

    # Who owns what: fraction of each gated layer's weights given to some experience.
    for layer, used in strategy.ownership.capacity_used().items():
        print(f"  {layer:12s} {100 * used:5.1f}% of the weights allocated")
    if logger is not None:
        logger.finish()


if __name__ == "__main__":
    main()
