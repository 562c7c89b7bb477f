"""loss.class_weights=auto: weights from the train masks' class pixels, their logging, cache and refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from masklab.errors import UserError
from masklab.losses import balanced_class_weights

from conftest import FAST, fit_in, mlflow_runs


def test_median_frequency_and_inverse_sqrt_by_hand():
    # Class 0 fills 900 of the 1000 pixels of both masks it is in; class 1 has 60 pixels in 2 masks of 500 + 500
    # pixels; class 2 has 40 pixels in one mask of 500; class 3 never appears.
    pixels, present_in = np.array([900, 60, 40, 0]), np.array([1000, 1000, 500, 0])
    freq = np.array([0.9, 0.06, 0.08])  # Eigen & Fergus: pixels / pixels of the images holding the class
    expected = np.median(freq) / freq
    assert balanced_class_weights("auto", pixels, present_in) == pytest.approx([*expected, 1.0])
    assert balanced_class_weights("median_frequency", pixels, present_in) == pytest.approx([*expected, 1.0])
    root = np.sqrt(np.array([0.9, 0.06, 0.04]))
    assert balanced_class_weights("inverse_sqrt", pixels, present_in) == pytest.approx([*(np.median(root) / root),
                                                                                       1.0])
    with pytest.raises(UserError, match=r"loss.class_weights='balanced': expected .* auto, median_frequency, "
                                        r"inverse_sqrt"):
        balanced_class_weights("balanced", pixels, present_in)


def test_auto_weights_are_counted_once_logged_and_used(project):
    from masklab.config import compose
    from masklab.data.open import open_dataset
    from masklab.tasks import task_for

    result = fit_in(project, [*FAST, "loss.class_weights=auto", "evaluate_after=false"])
    client, runs = mlflow_runs(project, "synthetic")
    run = runs[0]
    logged = json.loads(run.data.params["loss.class_weights"])
    assert run.data.tags["masklab.class_weights"] == "auto"
    # The weights are those of the train masks, counted here independently of the cache.
    cfg = compose("train", FAST)
    dataset = open_dataset(cfg.data, None, check=False)
    from masklab.data.images import read_mask

    counts = np.zeros((dataset.class_table.num_classes,), np.int64)
    present_in = np.zeros_like(counts)
    for s in dataset.labeled("train"):
        found = np.bincount(read_mask(dataset.root / s.mask).ravel(), minlength=len(counts))[: len(counts)]
        counts += found
        present_in += (found > 0) * found.sum()
    assert logged == pytest.approx(balanced_class_weights("auto", counts, present_in).tolist(), abs=1e-5)
    assert len(set(np.round(logged, 3))) > 1  # not all equal: the synthetic classes are unbalanced
    cache = list((project / "experiments" / "cache" / "class_pixels").rglob("*.parquet"))
    assert len(cache) == 1
    # A second count reads no label file: every count comes from the cache.
    task = task_for(cfg)

    def unreadable(*args):
        raise AssertionError("a label file was read although its counts are cached")

    task.label_map = unreadable  # type: ignore[method-assign]
    again = task.training_class_pixels(dataset, project / "experiments" / "cache")
    assert again.pixels.tolist() == counts.tolist()
    assert not math.isnan(result.best_value)  # it trained with the weights


@pytest.mark.parametrize("overrides, message", [
    (["loss=dice", "loss.class_weights=auto"], "loss.class_weights weights the ce term; the loss terms \\['dice'\\]"),
    (["loss.class_weights=[1.0,2.0]"], r"loss.class_weights: 2 numbers for 4 classes .*classes.yaml"),
    (["loss.class_weights=balanced"], "loss.class_weights='balanced': expected a list"),
    (["task=instance", "model=bottom_up", "loss.class_weights=auto"],
     "loss.class_weights: task=instance trains on its own targets"),
])
def test_class_weights_mistakes_are_one_line_errors(project, overrides, message):
    """Each is a user's mistake (the CLI prints its one line: user_error_message), found before training."""
    import re

    from masklab.errors import user_error_message

    with pytest.raises(Exception) as caught:
        fit_in(project, [*FAST, *overrides, "evaluate_after=false"])
    line = user_error_message(caught.value)
    assert line is not None and re.search(message, line), (line, caught.value)
