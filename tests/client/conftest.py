"""Fixtures of the client tests: the clients wired to fake Tritons (see ``client_fakes``)."""

import pytest
from client_fakes import AsyncFakeTriton, FakeTriton

from duet_sdk.client import client as client_module


@pytest.fixture
def fake(monkeypatch):
    fake = FakeTriton()
    monkeypatch.setattr(client_module, "_triton_client", lambda url: fake)
    return fake


@pytest.fixture
def async_fake(monkeypatch):
    fake = AsyncFakeTriton(FakeTriton())
    monkeypatch.setattr(client_module, "_aio_triton_client", lambda url: fake)
    return fake

