"""The use cases wired to in-memory fakes: no server, no network, milliseconds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from movieservice.core.service import MovieService, ServiceOptions
from tests.support.fakes import FakeCache, FakeStore, RecordedEvents

TOKEN = "writer-token"
BEARER = f"Bearer {TOKEN}"


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
    service = MovieService.create(cache, store, events, ServiceOptions(writer_tokens=[TOKEN]))
    yield Core(service, cache, store, events)
    await service.close()
