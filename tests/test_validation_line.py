"""Where no progress bar is drawn, training logs one plain line per validation."""

from __future__ import annotations

import logging
import re

from conftest import FAST, fit_in


def test_a_training_without_a_terminal_logs_each_validation(project, seed_store, caplog, monkeypatch):
    seed_store(project)
    monkeypatch.setenv("MASKLAB_PROGRESS", "0")  # as in a log file, CI or a SLURM job
    with caplog.at_level(logging.INFO, logger="masklab"):
        done = fit_in(project, [*FAST, "trainer.max_epochs=3", "evaluate_after=false"])
    lines = [r.getMessage() for r in caplog.records
             if r.name == "masklab.training.callbacks" and r.getMessage().startswith("epoch ")]
    assert len(lines) == 3, lines
    pattern = (r"epoch (\d)/3 step (\d+): .*val/loss \d\.\d{4}.*; val/mIoU (\d\.\d{4}) \(best (\d\.\d{4})\); "
               r"\d+ s elapsed")
    found = [re.match(pattern, line) for line in lines]
    assert all(found), lines
    assert [int(m.group(1)) for m in found] == [1, 2, 3] and [int(m.group(2)) for m in found] == [2, 4, 6]
    assert "left" in lines[0] and "left" not in lines[-1]
    best = [float(m.group(4)) for m in found]
    assert best == sorted(best) and best[-1] == round(done.best_value, 4)
    from mlflow.tracking import MlflowClient  # each line shows its own epoch's score, as logged

    history = MlflowClient(str(done.tracking_uri)).get_metric_history(done.run_id, "val/mIoU")
    assert [float(m.group(3)) for m in found] == [round(h.value, 4) for h in sorted(history, key=lambda h: h.step)]


def test_on_a_terminal_the_progress_bar_shows_it_instead(project, seed_store, caplog, monkeypatch):
    seed_store(project)
    monkeypatch.setenv("MASKLAB_PROGRESS", "1")
    with caplog.at_level(logging.INFO, logger="masklab"):
        fit_in(project, [*FAST, "trainer.max_epochs=1", "evaluate_after=false"])
    assert not [r for r in caplog.records if r.getMessage().startswith("epoch 1/1 step")]
