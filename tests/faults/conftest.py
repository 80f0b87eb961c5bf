"""Fixtures of the fault suite: sites (service + peers) closed after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.faults.helpers import Site


@pytest.fixture
def make_site(tmp_path) -> Iterator[Callable[..., Site]]:
    """Build a :class:`Site` in the test's directory; every one is closed afterwards."""
    sites: list[Site] = []

    def make(**kwargs: Any) -> Site:
        site = Site(tmp_path, **kwargs)
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.close()
