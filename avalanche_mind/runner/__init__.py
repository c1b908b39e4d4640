"""The comparison runner: MIND against Avalanche's PackNet, LwF, Naive and Joint training.

``compare`` is its command line (``avalanche-mind compare``; the repository's
``benchmarks/compare.py`` runs the same), ``presets`` one configuration per
benchmark, ``strategies`` the strategies by name, ``baselines`` and ``packnet`` how
each baseline is built on the shared backbone, ``loop`` the runs, ``probes`` what
is measured besides accuracy, and ``report`` the figures, the table and the files.
"""
