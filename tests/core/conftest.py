"""The use cases wired to in-memory fakes: no server, no network, milliseconds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from movieservice.core.service import MovieService, ServiceOptions
from movieservice.core.writers import Credentials
from tests.support.fakes import FakeCache, FakeStore, RecordedEvents

TOKEN = "writer-token"
# A writer's credentials, as the servicer hands them to the use cases.
WRITER = Credentials(authorization=f"Bearer {TOKEN}", peer="ipv4:192.0.2.1")


@dataclass
class Core:
    service: MovieService
    cache: FakeCache
    store: FakeStore
    events: RecordedEvents

    async def settle(self) -> None:
        """Wait for the background work (cache fills, refreshes) started so far."""
        await self.service.background.drain(5)


@pytest.fixture
async def core() -> AsyncIterator[Core]:
    cache, store, events = FakeCache(), FakeStore(), RecordedEvents()
    service = MovieService.create(cache, store, events, ServiceOptions(writer_tokens={"test-writer": TOKEN}))
    yield Core(service, cache, store, events)
    await service.close()
