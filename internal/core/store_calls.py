"""The one place where store failures become the service's errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from movieservice.core.errors import DeadlineExceeded, Unavailable
from movieservice.core.ports import StoreTimeout, StoreUnavailable

log = logging.getLogger(__name__)


@contextmanager
def store_errors() -> Iterator[None]:
    """StoreUnavailable becomes Unavailable, StoreTimeout DeadlineExceeded, with the port's message."""
    try:
        yield
    except StoreUnavailable as error:
        log.warning("store unavailable: %s", error.__cause__ or error)
        raise Unavailable(str(error)) from error
    except StoreTimeout as error:
        raise DeadlineExceeded(str(error)) from error
