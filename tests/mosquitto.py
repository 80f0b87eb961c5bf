"""A real Mosquitto broker for tests: plain and TLS listeners on free local ports.

``make test`` installs Debian's ``mosquitto`` where it is missing; a test that
needs a broker starts its own (:class:`Broker`), with a password file and
certificates made here (``openssl``), and stops it when done. Subscribers are
paho clients collecting what arrives.
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
USER, PASSWORD = "gateway", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class Certificates:
    """A test CA, a broker certificate for 127.0.0.1/localhost and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: the wrong CA

    @classmethod
    def make(cls, directory: Path) -> Certificates:
        directory.mkdir(parents=True, exist_ok=True)
        for ca in ("ca", "other-ca"):
            _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                     "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-subj", f"/CN=test {ca}",
                     cwd=directory)
        (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        for name in ("server", "client"):
            _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                     "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
            _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                     "-CAcreateserial", "-days", "2", "-out", f"{name}.crt",
                     "-extfile", "san.ext", cwd=directory)
        d = directory
        return cls(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt",
                   d / "client.key", d / "other-ca.crt")


class Broker:
    """A Mosquitto process; ``start``/``stop`` can be repeated on the same ports."""

    def __init__(self, directory: Path, *, tls: Certificates | None = None,
                 require_client_cert: bool = False, persistent: bool = False) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.passwords = directory / "passwords"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(self.passwords), USER, PASSWORD],
                       check=True, capture_output=True)
        self.passwords.chmod(0o600)
        lines = [
            # Run as whoever runs the tests (as root it would switch to "mosquitto",
            # which cannot read pytest's private temporary directory).
            f"user {getpass.getuser()}",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.passwords}",
            # Persistent: sessions and queued messages survive a restart (stopped cleanly).
            *(["persistence true", f"persistence_location {directory}/"] if persistent
              else ["persistence false"]),
            "max_inflight_messages 0",
            "max_queued_messages 0",
            f"listener {self.port} 127.0.0.1",
        ]
        if tls is not None:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {tls.ca}", f"certfile {tls.server_cert}", f"keyfile {tls.server_key}",
            ]
            if require_client_cert:
                lines.append("require_certificate true")
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log_path = directory / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"

    def start(self) -> Broker:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@dataclass
class Subscriber:
    """A paho client on the plain listener collecting every message under ``topic``."""

    broker: Broker
    topic: str
    persistent: bool = False  # a session the broker keeps (and queues for) while we are away
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{free_port()}",
                                  clean_session=not self.persistent)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.username_pw_set(USER, PASSWORD)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", self.broker.port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise TimeoutError("subscriber did not connect")

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        client.subscribe(self.topic, qos=1)
        self._ready.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def payloads(self, suffix: str = "") -> list[dict[str, Any]]:
        """The JSON documents received on topics ending in ``suffix``."""
        with self._lock:
            got = list(self.messages)
        return [json.loads(p) for t, p, _ in got if t.endswith(suffix) and p.startswith(b"{")]

    def texts(self, topic: str) -> list[str]:
        with self._lock:
            return [p.decode() for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Mqtt311Front:
    """A broker that speaks only MQTT 3.1.1: refuses a version 5 CONNECT the way such
    brokers do (3.1.1 CONNACK, code 1: unacceptable protocol version) and passes
    every other connection through to ``broker``."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = int(self.listener.getsockname()[1])
        self.refused = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        first = conn.recv(4096)
        # CONNECT: 0x10, remaining length (1 byte for a small packet), "\0\4MQTT", level.
        if first[:1] == b"\x10" and first[2:8] == b"\x00\x04MQTT" and first[8] == 5:
            self.refused += 1
            conn.sendall(b"\x20\x02\x00\x01")
            conn.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.broker.port))
        upstream.sendall(first)

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while chunk := src.recv(65536):
                    dst.sendall(chunk)
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()
        pipe(conn, upstream)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
