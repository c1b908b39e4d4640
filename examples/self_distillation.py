"""The self-distillation variant: the teacher is the model's own FREE capacity.

With ``self_distillation=True`` no second network is built: the teacher of
experience t is trained in place on the weights no earlier experience owns, its
logits on the training set are recorded, and its largest weights become t's
sub-network. Run ``python examples/self_distillation.py [--small]``.
"""
import argparse
import os

import torch

from avalanche_mind import MIND, gresnet32
from avalanche_mind.data import glyph_class_incremental
from avalanche_mind.inference.metrics import mind_evaluator
from avalanche_mind.logging.wandb_logger import add_wandb_arguments, wandb_logger_from_args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", default=os.environ.get("AVALANCHE_MIND_SMALL") == "1",
                        help="tiny sizes for a smoke run (also: AVALANCHE_MIND_SMALL=1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (for scripts and logs)")
    add_wandb_arguments(parser)  # --wandb [--wandb-mode offline --wandb-project ...]: log to W&B
    args = parser.parse_args()
    n_exp, n_classes, per_class, epochs = (3, 6, 20, 2) if args.small else (5, 20, 100, 10)
    torch.manual_seed(0)

    benchmark = glyph_class_incremental(n_experiences=n_exp, n_classes=n_classes, train_per_class=per_class,
                                        test_per_class=per_class // 2, image_size=32)
    model = gresnet32(num_classes=n_classes)
    logger = wandb_logger_from_args(args, config={"benchmark": "glyphs", "variant": "self-distillation"})
    strategy = MIND(model=model, n_experiences=n_exp, self_distillation=True, train_mb_size=32,
                    teacher_epochs=epochs, train_epochs=epochs, milestones=[], teacher_milestones=[],
                    seed=0, verbose=not args.quiet, evaluator=mind_evaluator(logger, interactive=False))
    for experience in benchmark.train_stream:
        strategy.train(experience)
        results = strategy.eval(benchmark.test_stream)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters held: {n_params} (one network; the default MIND also builds a teacher copy)")
    print(f"TAw {results['Top1_TAw_Acc_Stream/eval_phase/test_stream/Task000']:.3f}  "
          f"TAg {results['Top1_TAg_Acc_Stream/eval_phase/test_stream/Task000']:.3f}")
    if logger is not None:
        logger.finish()


if __name__ == "__main__":
    main()
