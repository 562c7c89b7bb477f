"""Presets whose expected value is a measurement (``expected.tolerance`` set) trained in full: the best value
must come back within the tolerance. A module of its own so xdist runs it beside the other preset tests."""

from __future__ import annotations

import pytest

from conftest import REPO, fit_in

pytestmark = pytest.mark.slow  # full trainings (the bottom-up preset ~110 s): run beside the team tests

PRESETS = sorted(p.stem for p in (REPO / "src/masklab/conf/experiment").glob("*.yaml"))


def measured_presets() -> list[str]:
    """Presets whose expected value is a measurement (it has a tolerance) on the synthetic data: trained in full."""
    import yaml

    found = []
    for name in PRESETS:
        preset = yaml.safe_load((REPO / "src/masklab/conf/experiment" / f"{name}.yaml").read_text())
        if (preset.get("expected") or {}).get("tolerance") and "_synthetic-" in name:
            found.append(name)
    return found


@pytest.mark.parametrize("preset", measured_presets())
def test_measured_preset_trains_to_its_expected_value(project, seed_store, preset):
    """A measured preset in full: the best monitored value is the preset's measured value within its tolerance
    (on the machine that measured it the run is deterministic; the tolerance covers other CPUs)."""
    seed_store(project)
    done = fit_in(project, [f"experiment={preset}", "evaluate_after=false"])
    expected = done.expected
    assert expected is not None and expected["metric"] == done.monitor and expected["tolerance"] > 0
    assert abs(done.best_value - expected["value"]) <= expected["tolerance"], (done.best_value, expected)
