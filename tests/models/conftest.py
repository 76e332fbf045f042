"""Shared setup of the model tests."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread_torch():
    """The models here are tiny: intra-op threading only adds contention on the 2-core CI box (10x slower
    forward passes under load), so run these tests single-threaded and restore the setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
