"""MIND dropped into an existing Avalanche pipeline: only the strategy line changes.

Run: ``python examples/avalanche_pipeline.py`` (glyph benchmark, rendered offline;
a few minutes on a CPU) or ``--small`` for a seconds-long smoke run.
"""
import argparse
import os

from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
from avalanche.logging import InteractiveLogger
from avalanche.training.plugins import EvaluationPlugin

from avalanche_mind import MIND, gresnet32, mind_metrics
from avalanche_mind.data import glyph_class_incremental
from avalanche_mind.logging.wandb_logger import add_wandb_arguments, wandb_logger_from_args

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--small", action="store_true", default=os.environ.get("AVALANCHE_MIND_SMALL") == "1",
                    help="tiny sizes for a smoke run (also: AVALANCHE_MIND_SMALL=1)")
parser.add_argument("--quiet", action="store_true", help="no progress bars or per-experience printing")
add_wandb_arguments(parser)  # --wandb [--wandb-mode offline --wandb-project ...]: log to W&B as well
args = parser.parse_args()
n_exp, n_classes, per_class, epochs = (3, 6, 20, 2) if args.small else (5, 20, 100, 10)
loggers = [] if args.quiet else [InteractiveLogger()]
if args.wandb:
    loggers.append(wandb_logger_from_args(args, config={"benchmark": "glyphs", "n_experiences": n_exp}))

# --- an ordinary Avalanche pipeline ------------------------------------------------
benchmark = glyph_class_incremental(n_experiences=n_exp, n_classes=n_classes, train_per_class=per_class,
                                    test_per_class=per_class // 2, image_size=32)
evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True),
                             forgetting_metrics(experience=True, stream=True),
                             *mind_metrics(),  # MIND's TAg, TAw and task-identification accuracy
                             loggers=loggers)
strategy = MIND(model=gresnet32(num_classes=n_classes), n_experiences=n_exp, train_mb_size=32,
                teacher_epochs=epochs, train_epochs=epochs, milestones=[epochs * 3 // 4],
                teacher_milestones=[epochs * 3 // 4], evaluator=evaluator,
                verbose=not args.quiet)  # MIND's own progress bars: teacher and distillation phases
for experience in benchmark.train_stream:
    strategy.train(experience)
    results = strategy.eval(benchmark.test_stream)
# -----------------------------------------------------------------------------------

for kind in ("TAw", "TAg"):
    accuracy = results[f"Top1_{kind}_Acc_Stream/eval_phase/test_stream/Task000"]
    print(f"{kind} accuracy on the whole test stream: {accuracy:.3f}")
if args.wandb:
    loggers[-1].finish()
