"""The WSGI application: a request in, a response out, over a read-only view.

Routes (GET and HEAD only: nothing here changes the gateway):

=========================  ===================================================
``/``                      site overview (HTML, refreshes itself)
``/sensor/<id>``           a sensor's charts (HTML + ``static/sensor.js``)
``/api/overview``          the overview as JSON
``/api/sensor/<id>``       chart data, ``?range=24h|7d|90d`` (JSON)
``/metrics``               Prometheus text format
``/healthz``               200 while every actor answers its ping, else 503
``/static/<file>``         the page's script, style and the vendored uPlot
=========================  ===================================================

With a token (``web.token_file``) every route but ``/healthz`` needs it: as
``Authorization: Bearer <token>``, or for a browser once as ``?token=<token>``,
which sets a cookie and redirects to the same address without it.
"""

from __future__ import annotations

import hmac
import json
import logging
import mimetypes
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from actors.supervision import Liveness
from web import pages
from web.view import RANGES, SiteView, UnknownSensor

log = logging.getLogger("web")

STATIC_DIR = Path(__file__).resolve().parent / "static"
COOKIE = "wdn_token"
DEFAULT_RANGE = "7d"
_SENSOR_PATH = re.compile(r"^/(api/)?sensor/([0-9]{1,5})$")

StartResponse = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Response:
    status: HTTPStatus
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def _json(value: Any, status: HTTPStatus = HTTPStatus.OK) -> Response:
    return Response(status, json.dumps(value, separators=(",", ":")).encode(),
                    "application/json")


def _page(status: HTTPStatus, text: str) -> Response:
    return Response(status, pages.message_html(f"{status.value} {status.phrase}", text).encode())


@dataclass(frozen=True, slots=True)
class Health:
    """How /healthz judges the supervisor's last ping round (see :class:`Liveness`)."""

    liveness: Callable[[], Liveness]
    max_age_s: float  # a verdict older than this means the pings stopped

    def verdict(self) -> dict[str, Any]:
        live = self.liveness()
        age = live.age_s()
        if age is None:
            answered, detail = False, "no ping round yet (starting)"
        elif age > self.max_age_s:
            answered, detail = False, f"no ping round for {age:.0f} s"
        elif not live.answered:
            answered, detail = False, "not answering: " + ", ".join(live.silent)
        else:
            answered, detail = True, "every actor answered"
        return {"answered": answered, "detail": detail,
                "age_s": None if age is None else round(age, 1), "silent": list(live.silent)}


class WebApp:
    """The page, /metrics and /healthz as one WSGI callable (thread-safe)."""

    def __init__(self, view: SiteView, registry: CollectorRegistry, health: Health, *,
                 token: str | None = None) -> None:
        self.view = view
        self.registry = registry
        self.health = health
        self.token = token
        self.static = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            response = self.respond(environ)
        except Exception:
            log.exception("error serving %s", environ.get("PATH_INFO"))
            response = _page(HTTPStatus.INTERNAL_SERVER_ERROR, "see the gateway's log")
        headers = [("Content-Type", response.content_type),
                   ("Content-Length", str(len(response.body))),
                   ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                   *response.headers]
        start_response(f"{response.status.value} {response.status.phrase}", headers)
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else response.body]

    # -- routing -------------------------------------------------------------------

    def respond(self, environ: dict[str, Any]) -> Response:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        if method not in ("GET", "HEAD"):
            return Response(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only\n", "text/plain",
                            (("Allow", "GET, HEAD"),))
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if path == "/healthz":
            return self.healthz()
        denied = self._authorize(environ, path, query)
        if denied is not None:
            return denied
        if path == "/":
            return Response(HTTPStatus.OK, pages.overview_html(
                self.view.overview(), self.health.verdict()).encode())
        if path == "/api/overview":
            return _json({**self.view.overview(), "health": self.health.verdict()})
        if path == "/metrics":
            return Response(HTTPStatus.OK, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        if path.startswith("/static/"):
            return self._static(path.removeprefix("/static/"))
        match = _SENSOR_PATH.match(path)
        if match:
            return self._sensor(match.group(2), bool(match.group(1)), query)
        return _page(HTTPStatus.NOT_FOUND, f"nothing at {path}")

    def healthz(self) -> Response:
        verdict = self.health.verdict()
        return _json(verdict, HTTPStatus.OK if verdict["answered"] else HTTPStatus.SERVICE_UNAVAILABLE)

    def _sensor(self, sensor: str, api: bool, query: dict[str, list[str]]) -> Response:
        chosen = query.get("range", [DEFAULT_RANGE])[-1]
        if chosen not in RANGES:
            text = f"range must be one of {', '.join(RANGES)}, got {chosen!r}"
            return _json({"error": text}, HTTPStatus.BAD_REQUEST) if api else \
                _page(HTTPStatus.BAD_REQUEST, text)
        if not api:
            return Response(HTTPStatus.OK, pages.sensor_html(sensor, list(RANGES), chosen).encode())
        try:
            return _json(self.view.sensor_charts(sensor, chosen))
        except UnknownSensor:
            return _json({"error": f"no reading of sensor {sensor} is stored"}, HTTPStatus.NOT_FOUND)

    def _static(self, name: str) -> Response:
        path = self.static.get(name)  # only the files shipped there: no path games
        if path is None:
            return _page(HTTPStatus.NOT_FOUND, f"no static file {name}")
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind.endswith("javascript"):
            kind += "; charset=utf-8"
        return Response(HTTPStatus.OK, path.read_bytes(), kind)

    # -- the token -------------------------------------------------------------------

    def _authorize(self, environ: dict[str, Any], path: str,
                   query: dict[str, list[str]]) -> Response | None:
        """None when the request may pass; else the answer (401, or the cookie's redirect)."""
        if self.token is None:
            return None
        offered = query.get("token")
        if offered is not None:
            if not self._matches(offered[-1]):
                return self._unauthorized("wrong token")
            rest = {k: v for k, v in query.items() if k != "token"}
            location = path + ("?" + urlencode(rest, doseq=True) if rest else "")
            cookie = f"{COOKIE}={offered[-1]}; Path=/; HttpOnly; SameSite=Strict"
            return Response(HTTPStatus.SEE_OTHER, b"", "text/plain",
                            (("Location", location), ("Set-Cookie", cookie)))
        header = environ.get("HTTP_AUTHORIZATION", "")
        if header:
            scheme, _, credential = header.partition(" ")
            if scheme.lower() == "bearer" and self._matches(credential.strip()):
                return None
            return self._unauthorized("wrong token")
        try:
            cookies = SimpleCookie(environ.get("HTTP_COOKIE", ""))
        except CookieError:
            cookies = SimpleCookie()
        if COOKIE in cookies and self._matches(cookies[COOKIE].value):
            return None
        return self._unauthorized("this page needs the gateway's token")

    def _matches(self, offered: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(offered.encode(), self.token.encode())

    @staticmethod
    def _unauthorized(why: str) -> Response:
        page = _page(HTTPStatus.UNAUTHORIZED,
                     f"{why}: open the page once as /?token=<token>, or send "
                     "'Authorization: Bearer <token>'")
        return Response(page.status, page.body, page.content_type,
                        (("WWW-Authenticate", 'Bearer realm="wdn-gateway"'),))
