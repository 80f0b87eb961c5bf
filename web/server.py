"""The web server: waitress on a thread of its own, owned by the supervisor.

waitress serves each request on one of its worker threads; its event loop runs
here on a thread started by :meth:`WebServer.start` and stopped by
:meth:`WebServer.stop`. The loop is driven one poll at a time so that it is
closed from its own thread (closing its sockets from another thread would
race the poll). The actors never wait for anything here: requests read the
store through their own read-only transactions.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import waitress
from waitress import wasyncore

from actors.supervision import LIVENESS_PING_S, PING_TIMEOUT_S, Liveness
from core.config import Config
from storage.store import Store
from web.app import Health, WebApp
from web.metrics import GatewayCollector, registry_for
from web.view import SiteView

log = logging.getLogger("web")
# waitress warns "Task queue depth is N" whenever two requests overlap: a
# browser's page and its data, a scrape beside it; nothing an operator acts on.
logging.getLogger("waitress.queue").setLevel(logging.ERROR)

# A liveness verdict older than three ping rounds and a round's own timeout
# means the pings themselves stopped.
HEALTH_MAX_AGE_S = 3 * LIVENESS_PING_S + PING_TIMEOUT_S
WORKER_THREADS = 2  # a technician's laptop and a Prometheus scraper
POLL_S = 0.5
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{8,}")


class WebError(Exception):
    """The page cannot be served (address taken, token unreadable); the message says why."""


def load_token(path: str) -> str:
    """The token in ``path`` (surrounding blanks and newline ignored)."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise WebError(f"web.token_file {path}: cannot read: {exc}") from None
    if not _TOKEN.fullmatch(token):
        raise WebError(f"web.token_file {path}: the token must be 8 or more letters, digits "
                       "or ._~+/=- (e.g. the output of `openssl rand -hex 16`)")
    return token


def build_app(config: Config, store: Store, liveness: Callable[[], Liveness], *,
              clock: Callable[[], float] = time.time) -> WebApp:
    """The WSGI app of the service's configuration (reads ``web.token_file``)."""
    token = load_token(config.web.token_file) if config.web.token_file else None
    collector = GatewayCollector(store, config, clock=clock, liveness=liveness)
    return WebApp(SiteView(store, config, clock), registry_for(collector),
                  Health(liveness, HEALTH_MAX_AGE_S), token=token)


class WebServer:
    """Serves ``app`` on ``host:port`` from a thread until :meth:`stop`."""

    def __init__(self, app: Callable[..., Any], host: str, port: int) -> None:
        self.app = app
        self.host, self.port = host, port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        """Bind (raising :class:`WebError` if the address cannot be had) and serve."""
        # One socket: "localhost" could resolve to two (IPv4 and IPv6).
        host = "127.0.0.1" if self.host == "localhost" else self.host
        try:
            self._server = waitress.create_server(
                self.app, host=host, port=self.port, threads=WORKER_THREADS,
                ident="wdn-gateway", clear_untrusted_proxy_headers=True)
        except OSError as exc:
            raise WebError(f"cannot listen on {self.host}:{self.port}: "
                           f"{exc.strerror or exc}") from None
        self.port = int(self._server.effective_port)
        self._thread = threading.Thread(target=self._serve, name="web-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        server = self._server
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=POLL_S, map=server._map, use_poll=True, count=1)
        except Exception:
            log.exception("the web server stopped")
        finally:
            server.task_dispatcher.shutdown(timeout=2)
            wasyncore.close_all(server._map)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                log.error("the web server did not stop within %.1f s", timeout)
