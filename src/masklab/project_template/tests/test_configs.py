"""Every experiment preset of this project composes with masklab's train config: `python -m pytest tests`."""

from pathlib import Path

import pytest

from masklab.config import compose

PROJECT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (PROJECT / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes(preset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASKLAB_ROOT", str(PROJECT))
    cfg = compose("train", [f"experiment={preset}"], source=f"conf/experiment/{preset}.yaml")
    assert cfg.model.arch and cfg.data.name
