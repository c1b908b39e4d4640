"""Compare MIND with Avalanche's baselines on one benchmark: ``avalanche-mind compare`` as a script.

Usage (from the repository root)::

    python benchmarks/compare.py                         # glyphs-cpu: the offline default
    python benchmarks/compare.py --preset glyphs-domain-cpu
    python benchmarks/compare.py --preset cifar100 --data-root ~/data --seeds 0 1 2 --device cuda
    python benchmarks/compare.py --tiny --out /tmp/smoke   # seconds; what the tests run
    python benchmarks/compare.py --list-presets
    python benchmarks/compare.py --tiny --strategies mind naive --wandb --wandb-mode offline

The runner is the package's :mod:`avalanche_mind.runner` (its options, outputs and
exit statuses are documented in :mod:`avalanche_mind.runner.compare`).
"""
import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script from a clone that is not installed: make the package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from avalanche_mind.runner.compare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
