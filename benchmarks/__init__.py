"""The comparison runner: MIND against Avalanche's PackNet, LwF, Naive and Joint training.

``benchmarks.compare`` is the CLI (``python benchmarks/compare.py --help``, or
``benchmarks.compare.main(argv)``), ``benchmarks.presets`` one configuration per
benchmark, ``benchmarks.baselines`` how each baseline is built on the shared
backbone, and ``benchmarks.report`` the JSON/CSV/Markdown/PNG outputs.
"""
