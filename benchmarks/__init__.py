"""This repository's scripts around the package (the package never imports them).

``compare.py`` runs the comparison (the package's :mod:`avalanche_mind.runner`, the
same as ``avalanche-mind compare``); ``perf.py`` measures MIND's costs;
``step_time.py`` estimates the paper presets' training time; ``export_speed.py``
measures exported artefacts against the Predictor.
"""
