"""Hyper-parameter sweeps of `masklab train`: Optuna studies (grid, TPE, random) launched from YAML presets.

- ``space``: the search space of a preset (``params:`` / ``grid:``), validated, as Hydra overrides.
- ``storage``: the Optuna storage (SQLite under experiments/ by default, any SQLAlchemy URL), MLflow retries.
- ``pruning``: the Lightning callback that reports the monitored metric to the trial and prunes.
- ``trial``: one trial = ``train`` composed with the trial's overrides and run in this process.
- ``worker``: ``python -m masklab.sweep.worker``, one of several processes working on one study.
- ``launch``: the ``masklab sweep`` command: study, parent MLflow run, workers, best trial.
- ``summary``: ``masklab sweep summary``: ranked trials and a PNG of the metric versus each parameter.
"""
