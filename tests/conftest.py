"""Shared fixtures: a real store in a temp dir, configs, and actor plumbing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from actors.base import ActorContext, GatewayActor, Peers, RuntimeStats
from core import messages
from core.config import Config, parse_config
from storage.store import Store


@pytest.fixture(autouse=True)
def stop_all_actors() -> Iterator[None]:
    """Safety net: no actor outlives its test (pykka's own tests do the same)."""
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=5)


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    with Store(tmp_path / "store.lmdb") as s:
        yield s


def make_config(tmp_path, **sections: dict[str, Any]) -> Config:
    document: dict[str, Any] = {
        "site": {"name": "test", "timezone": "Asia/Seoul"},
        "serial": {"port": "loop://"},
        "upstream": {"port": "-"},
        "storage": {"path": str(tmp_path / "store.lmdb")},
        "criteria": {"initial_data": ""},
    }
    for section, values in sections.items():
        document.setdefault(section, {}).update(values)
    return parse_config(document)


@pytest.fixture
def config(tmp_path) -> Config:
    return make_config(tmp_path)


class Recording:
    """What a :class:`Recorder` was told, shared with the test thread."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.changed = threading.Condition()

    def add(self, message: Any) -> None:
        with self.changed:
            self.received.append(message)
            self.changed.notify_all()

    def wait_for(self, predicate, timeout: float = 10.0) -> list[Any]:
        with self.changed:
            if not self.changed.wait_for(lambda: predicate(self.received), timeout=timeout):
                raise TimeoutError(f"recorder saw only {self.received}")
            return list(self.received)


class Recorder(GatewayActor):
    """A real actor standing in for a peer: it records every message it is told."""

    role = "recorder"

    def __init__(self, context: ActorContext, recording: Recording) -> None:
        super().__init__(context)
        self.recording = recording

    def on_receive(self, message: Any) -> Any:
        decoded = messages.decode(message)
        if isinstance(decoded, messages.Ping):
            return "pong"
        self.recording.add(decoded)
        return None


class Harness:
    """Starts actors with a shared context and records what they tell their peers."""

    def __init__(self, config: Config, store: Store) -> None:
        self.crashes: list[tuple[str, BaseException | None]] = []
        self.peers = Peers()
        self.context = ActorContext(
            config=config, store=store, peers=self.peers, stats=RuntimeStats(),
            report_crash=lambda role, exc: self.crashes.append((role, exc)), test_hooks=True,
        )

    def start(self, cls: type[GatewayActor]) -> pykka.ActorRef[Any]:
        ref = cls.start(self.context)
        self.peers.set(cls.role, ref)
        return ref

    def record(self, *roles: str) -> Recording:
        recording = Recording()
        ref = Recorder.start(self.context, recording)
        for role in roles:
            self.peers.set(role, ref)
        return recording

    @staticmethod
    def tell(ref: pykka.ActorRef[Any], message: Any) -> None:
        ref.tell(messages.encode(message))

    @staticmethod
    def ask(ref: pykka.ActorRef[Any], message: Any) -> Any:
        return ref.ask(messages.encode(message), timeout=10)


@pytest.fixture
def harness(config, store) -> Harness:
    return Harness(config, store)
