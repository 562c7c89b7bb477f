"""The random states a checkpoint keeps for a resume: CPU, numpy, Python and, on a GPU machine, every CUDA device."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from masklab.training.module import rng_states, set_rng_states


def draws() -> tuple[float, float, float]:
    return float(torch.rand(1)), float(np.random.rand()), random.random()


def test_a_restored_state_draws_what_the_saved_one_would_have():
    saved = rng_states()
    expected = draws()
    draws()  # move on
    set_rng_states(saved)
    assert draws() == expected
    buffer = io.BytesIO()  # as a checkpoint holds them: loadable with weights_only=True
    torch.save(saved, buffer)
    buffer.seek(0)
    set_rng_states(torch.load(buffer, weights_only=True))
    assert draws() == expected


class FakeCuda:
    """Two CUDA devices' generator states, as torch.cuda reports and restores them (no GPU on this machine)."""

    def __init__(self, count: int):
        self.states = {i: torch.tensor([i, 7, 7], dtype=torch.uint8) for i in range(count)}

    def get_rng_state_all(self):
        return [self.states[i].clone() for i in sorted(self.states)]

    def set_rng_state(self, state, device):
        self.states[device] = state.clone()


@pytest.mark.parametrize(("saved_on", "resumed_on"), [(2, 2), (2, 1), (1, 0)])
def test_cuda_states_round_trip_to_the_devices_there_are(monkeypatch, saved_on, resumed_on):
    before = FakeCuda(saved_on)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", before.get_rng_state_all)
    saved = rng_states()
    assert [s.tolist() for s in saved["cuda"]] == [[i, 7, 7] for i in range(saved_on)]
    after = FakeCuda(resumed_on)
    for state in after.states.values():
        state.zero_()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: resumed_on > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: resumed_on)
    monkeypatch.setattr(torch.cuda, "set_rng_state", after.set_rng_state)
    set_rng_states(saved)
    assert {i: s.tolist() for i, s in after.states.items()} == {i: [i, 7, 7] for i in range(resumed_on)}
