"""MqttPublisher: the second uplink, every outbox frame published to an MQTT broker.

It reads the same persistent outbox as the Transmitter with its own cursor
(consumer ``mqtt``), which moves only over frames the broker acknowledged
(PUBACK, QoS 1), so a frame is never counted as delivered before the broker
has it, and a restart (or a kill -9) publishes again from the cursor: a
consumer may see a frame twice, always with the same ``seq``. The serial
upstream and the broker never wait for each other: a frame leaves the outbox
only once every enabled uplink has it (``Store.acknowledge_outbox``,
``release_published_through``), or when the outbox bound drops it, which is
counted for each uplink.

The paho-mqtt client lives in a helper thread the actor owns, and only there:
that thread connects and reconnects, with growing, jittered delays, falls back
to MQTT 3.1.1 when a broker refuses version 5, publishes what the actor hands
it (in order: paho writing from two threads can swap two frames) and tells the
actor which frames the broker acknowledged. All outbox and cursor work happens
in the actor.
"""

from __future__ import annotations

import random
import ssl
import time
from collections import deque
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from actors.base import ActorContext, GatewayActor
from core.messages import BrokerConnected, BrokerDelivered, BrokerDown, OutboxAppended, Tick
from core.mqtt_payload import publication, status_topic
from core import frames
from storage import documents
from storage.store import OUTBOX_PUBLISHER, OutboxEntry, StoreError

CONSUMER = OUTBOX_PUBLISHER
# The cursor is recorded at most this often while frames flow (and when they
# stop): a crash costs at most this much republishing, never a frame.
COMMIT_EVERY_S = 0.25
READ_CHUNK = 500
# The network thread's longest wait for the broker before it looks for frames
# to publish: the most a frame waits once the actor has handed it over.
LOOP_TIMEOUT_S = 0.02
# The MQTT 5 reason code, and the MQTT 3.1.1 CONNACK code, of a broker that
# does not speak the protocol version asked for.
_UNSUPPORTED_VERSION = (0x84, 1)


class MqttPublisher(GatewayActor):
    role = "mqtt"

    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        self.cfg = self.config.mqtt
        self.tz = self.config.site.tz
        self.prefix = self.cfg.prefix(self.config.site.name)
        self.delivered = 0  # every frame up to here has its PUBACK (the cursor)
        self._committed = 0
        self._committed_at = 0.0
        self._next = 1  # the next frame to publish is the first one after this - 1
        self._order: deque[int] = deque()  # seqs in flight, in publishing order
        self._acked: set[int] = set()
        # Handed to the network thread: (connection, seq, topic, payload). A deque's
        # append and popleft are safe across threads.
        self._outgoing: deque[tuple[int, int, str, bytes]] = deque()
        self._connection = 0  # counts connections, so a late PUBACK of an old one is ignored
        self._live = 0  # the connection the actor publishes on; 0 = none
        self._tokens = 0.0
        self._refilled = time.monotonic()
        self._state: dict[str, Any] = {}

    # -- lifecycle ---------------------------------------------------------------

    def on_start(self) -> None:
        with self.store.read() as view:
            self.delivered = self._committed = view.offset(CONSUMER)
        self._next = self.delivered + 1
        self._record_state("connecting", "")
        self.log.info("publishing to %s under %s/ from frame %d", self.cfg.url, self.prefix,
                      self._next)
        self.start_helper("network", self._network)

    def release(self) -> None:
        # The network thread sees stopping, says "offline" and disconnects.
        self._commit(force=True)

    # -- messages ----------------------------------------------------------------

    def on_broker_up(self, message: BrokerConnected) -> None:
        self._live = message.connection
        # In-flight frames of a lost connection are published again, in order.
        self._order.clear()
        self._acked.clear()
        self._next = self.delivered + 1
        self._record_state("connected", f"MQTT {message.protocol}")
        self._drain()

    def on_broker_down(self, message: BrokerDown) -> None:
        self._live = 0
        if self._state.get("state") != "down" or self._state.get("detail") != message.reason:
            # Once per reason: the retries go on quietly, and "since" stays the first.
            self.log.warning("broker %s: %s; retrying", self.cfg.url, message.reason)
            self._record_state("down", message.reason)
        self._commit(force=True)

    def on_broker_ack(self, message: BrokerDelivered) -> None:
        if message.connection != self._live:
            return  # PUBACKs of a connection since lost: those frames go out again
        acked = self._acked
        acked.update(seq for seq in message.seqs if isinstance(seq, int))
        order = self._order
        while order and order[0] in acked:
            acked.discard(order[0])
            self.delivered = order.popleft()
        self._commit(force=not order)  # all in: record it now, the link may stay quiet
        # Refill the window in large steps: one outbox read per frame would cost
        # more than the publishing.
        if len(order) <= self.cfg.max_inflight // 2:
            self._drain()

    def on_outbox(self, message: OutboxAppended) -> None:
        if message.seq >= self._next:
            self._drain()

    def on_tick(self, message: Tick) -> None:
        self._commit(force=True)
        self._drain()

    # -- publishing --------------------------------------------------------------

    def _drain(self) -> None:
        """Hand the next frames to the network thread, within the window and the rate."""
        live = self._live
        if not live:
            return
        now = time.monotonic()
        rate = self.cfg.drain_per_s
        self._tokens = min(rate, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        room = min(self.cfg.max_inflight - len(self._order), int(self._tokens))
        while room > 0:
            with self.store.read() as view:
                entries = view.outbox(after=self._next - 1, limit=min(room, READ_CHUNK))
            if not entries:
                break
            for entry in entries:
                pub = publication(self.prefix, entry.wire or self._wire(entry), self.tz)
                self._outgoing.append((live, entry.seq, pub.topic, pub.payload))
                self._order.append(entry.seq)
                self._next = entry.seq + 1
            self._tokens -= len(entries)
            room -= len(entries)

    def _wire(self, entry: OutboxEntry) -> bytes:
        """The line of an entry stored without one (written before lines were kept)."""
        return frames.encode(entry.frame, self.tz)

    def _commit(self, *, force: bool) -> None:
        if self.delivered == self._committed:
            return
        now = time.monotonic()
        if not force and now - self._committed_at < COMMIT_EVERY_S:
            return
        delivered, after = self.delivered, self._committed
        release = self.config.upstream.ack

        def write(batch: Any) -> None:
            batch.set_offset(CONSUMER, delivered)
            if release:
                batch.release_published_through(delivered, after)

        try:
            self.store.transact(write)
        except StoreError as exc:  # progress only spares republishing; frames stay
            self.log.error("cannot record MQTT progress: %s", exc)
            return
        self._committed, self._committed_at = delivered, now

    def _record_state(self, state: str, detail: str) -> None:
        """Keep the broker state in the store, where ``status`` reads it."""
        self._state = {"state": state, "detail": detail, "since": self.context.clock(),
                       "url": self.cfg.url}
        doc = dict(self._state)
        try:
            self.store.transact(lambda b: documents.put_uplink_state(b, CONSUMER, doc))
        except StoreError as exc:
            self.log.error("cannot record the MQTT state: %s", exc)

    # -- the network thread --------------------------------------------------------

    def _network(self) -> None:
        """Connect, run the client's loop, reconnect with growing jittered delays."""
        delay = self.cfg.reconnect_initial_s
        protocol = mqtt.MQTTv5
        while not self.stopping.is_set():
            self._connection += 1
            connection = self._connection
            client = self._new_client(protocol, connection)
            outcome = self._serve(client)
            if outcome == "fallback" and protocol == mqtt.MQTTv5:
                protocol = mqtt.MQTTv311
                self.log.info("broker %s refuses MQTT 5; using 3.1.1", self.cfg.url)
                continue
            if outcome == "served":
                delay = self.cfg.reconnect_initial_s
            # Jitter: fifty gateways cut off together do not come back together.
            self.stopping.wait(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.cfg.reconnect_max_s)

    def _serve(self, client: mqtt.Client) -> str:
        """One connection: ``"served"`` after a working one ended, ``"failed"``,
        or ``"fallback"`` when the broker refused the protocol version."""
        try:
            client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        except (OSError, ssl.SSLError, ValueError) as exc:  # refused, unreachable, TLS
            self.tell_self(BrokerDown(f"cannot connect: {_reason(exc)}"))
            return "failed"
        userdata = client.user_data_get()
        acked: list[int] = userdata["acked"]
        mids: dict[int, int] = userdata["mids"]
        connection = userdata["connection"]
        outgoing = self._outgoing
        while not self.stopping.is_set():
            rc = client.loop(timeout=LOOP_TIMEOUT_S if not outgoing else 0)
            while outgoing and userdata["up"]:
                frame_connection, seq, topic, payload = outgoing.popleft()
                if frame_connection != connection:
                    continue  # handed over for a connection since lost
                info = client.publish(topic, payload, qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    break  # the connection is going: the loop says so next
                mids[info.mid] = seq
            if acked:  # one message per loop turn, not one per PUBACK
                seqs = acked[:]
                del acked[:len(seqs)]
                self.tell_self(BrokerDelivered(seqs, connection))
            if userdata["refused"] is not None:
                code = userdata["refused"]
                client.disconnect()
                if code.value in _UNSUPPORTED_VERSION:
                    return "fallback"
                self.tell_self(BrokerDown(f"connection refused: {code}"))
                return "failed"
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self.tell_self(BrokerDown(f"connection lost: {mqtt.error_string(rc)}"))
                return "served" if userdata["up"] else "failed"
        if userdata["up"]:
            # A clean stop sends no last will: say so ourselves.
            client.publish(status_topic(self.prefix), b"offline", qos=1, retain=True)
            client.loop(timeout=0.2)
            client.disconnect()
        return "served"

    def _new_client(self, protocol: int, connection: int) -> mqtt.Client:
        cfg = self.cfg
        # What the callbacks (in this thread) share with _serve: "mids" maps the
        # message id of each frame in flight to its seq, "acked" collects the seqs
        # the broker acknowledged since the actor was last told.
        userdata: dict[str, Any] = {"refused": None, "up": False, "acked": [], "mids": {},
                                    "connection": connection}
        client = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=cfg.client(self.config.site.name), protocol=protocol,
                             userdata=userdata)
        # The actor keeps its own window of max_inflight: paho's queue beyond its
        # limit would be drained by the network thread while the actor publishes
        # more, which can swap two frames.
        client.max_inflight_messages_set(0)
        client.will_set(status_topic(self.prefix), b"offline", qos=1, retain=True)
        if cfg.username:
            password = None
            if cfg.password_file:
                lines = Path(cfg.password_file).read_text().splitlines()
                password = lines[0] if lines else ""
            client.username_pw_set(cfg.username, password)
        if cfg.tls:
            client.tls_set(ca_certs=cfg.ca_file or None, certfile=cfg.cert_file or None,
                           keyfile=cfg.key_file or None)
        version = "5" if protocol == mqtt.MQTTv5 else "3.1.1"

        def on_connect(client: mqtt.Client, userdata: dict[str, Any], _flags: Any,
                       reason: ReasonCode, _properties: Any) -> None:
            if reason.is_failure:
                userdata["refused"] = reason
                return
            userdata["up"] = True
            client.publish(status_topic(self.prefix), b"online", qos=1, retain=True)
            self.tell_self(BrokerConnected(version, connection))

        def on_publish(_client: mqtt.Client, userdata: dict[str, Any], mid: int,
                       _reason: ReasonCode, _properties: Any) -> None:
            seq = userdata["mids"].pop(mid, None)
            if seq is not None:  # None: the status message
                userdata["acked"].append(seq)

        client.on_connect = on_connect
        client.on_publish = on_publish
        return client


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message})"
    return str(exc) or type(exc).__name__
