"""Scoring tests run tiny matrices: one torch thread each, since extra threads only contend on a
shared CI box (5-15x slower under load)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
