"""Malformed and hostile input over raw TCP sockets.

After every case the broker must still be alive and serve a fresh client (a raw ApiVersions
round trip plus a confluent-kafka metadata request and a produce/consume round trip).

Wire layout used below (all integers big-endian, see https://kafka.apache.org/protocol):

  frame          = int32 size, then `size` bytes of request
  request header = int16 api_key, int16 api_version, int32 correlation_id,
                   int16 client_id_len, client_id bytes            (header v1, non-flexible)
                   [+ tagged fields varint 0x00 for header v2, i.e. flexible request versions]
  ApiVersions v0 = header v1 with api_key 18, version 0, empty body
  Metadata v1    = header v1 with api_key 3, version 1; body int32 topic_count, then per topic
                   int16 len + name bytes (topic_count -1 = all topics)
"""
from __future__ import annotations

import socket
import struct
import time

import pytest

from conftest import api_versions_roundtrip, recv_exact, unique

MAX_REQUEST_BYTES = 104857600  # socket.request.max.bytes default
CLIENT_ID = b"fjord-badinput"

pytestmark = pytest.mark.timeout(90)


def header(api_key: int, version: int, cid: int, client_id: bytes = CLIENT_ID) -> bytes:
    return struct.pack(">hhih", api_key, version, cid, len(client_id)) + client_id


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def connect(broker) -> socket.socket:
    s = socket.create_connection((broker.host, broker.port), timeout=10)
    s.settimeout(10)
    return s


def read_until_closed(s: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Read until the peer closes (True) or `timeout` passes (False). Returns (closed, data)."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except (ConnectionResetError, BrokenPipeError):
            return True, data
        if not chunk:
            return True, data
        data += chunk
    return False, data


def assert_serves(broker) -> None:
    """The broker is alive and a brand-new client gets full service."""
    assert broker.alive(), f"broker process exited (code {broker.proc.returncode})"
    apis = api_versions_roundtrip(broker.host, broker.port)
    keys = {k for k, _, _ in apis}
    assert {0, 1, 3, 18}.issubset(keys), f"ApiVersions lacks Produce/Fetch/Metadata/ApiVersions: {sorted(keys)}"

    from confluent_kafka import Consumer, Producer, TopicPartition
    topic = unique("alive")
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "message.timeout.ms": 20000})
    errs = []
    p.produce(topic, key=b"k", value=b"still-alive", on_delivery=lambda e, m: errs.append(e))
    assert p.flush(25) == 0, "produce to a fresh topic did not complete"
    assert errs == [None], f"produce failed: {errs}"
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("g"),
                  "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 20
        got = None
        while time.monotonic() < deadline and got is None:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got = m.value()
        assert got == b"still-alive", f"consumed {got!r}"
    finally:
        c.close()


def test_baseline_and_pipelining(broker):
    """Three ApiVersions requests written in one send() are answered in order."""
    with connect(broker) as s:
        s.sendall(b"".join(frame(header(18, 0, cid)) for cid in (11, 12, 13)))
        cids = []
        for _ in range(3):
            size = struct.unpack(">i", recv_exact(s, 4))[0]
            body = recv_exact(s, size)
            cids.append(struct.unpack(">i", body[:4])[0])
            assert struct.unpack(">h", body[4:6])[0] == 0, "ApiVersions error_code != 0"
    assert cids == [11, 12, 13], f"pipelined responses out of order: {cids}"
    assert_serves(broker)


def test_truncated_frame_then_disconnect(broker):
    """Announce 64 bytes, send 12 (part of a header), hang up."""
    with connect(broker) as s:
        s.sendall(struct.pack(">i", 64) + header(18, 0, 1)[:12])
        time.sleep(0.2)
    time.sleep(0.5)
    assert_serves(broker)


def test_truncated_length_prefix_then_disconnect(broker):
    """Only two bytes of the four-byte size prefix, then hang up."""
    with connect(broker) as s:
        s.sendall(b"\x00\x00")
        time.sleep(0.2)
    assert_serves(broker)


def test_oversized_length_prefix_closes_connection(broker):
    """A size prefix above socket.request.max.bytes must close the connection (without the broker
    allocating or waiting for 100 MB)."""
    with connect(broker) as s:
        s.sendall(struct.pack(">i", MAX_REQUEST_BYTES + 1) + header(18, 0, 2))
        closed, data = read_until_closed(s, 15)
    assert closed, "connection still open 15s after a size prefix > socket.request.max.bytes"
    assert data == b"", f"broker answered an oversized frame with {data[:64]!r}"
    assert_serves(broker)


def test_negative_length_prefix_closes_connection(broker):
    with connect(broker) as s:
        s.sendall(struct.pack(">i", -5) + b"\x00" * 8)
        closed, data = read_until_closed(s, 15)
    assert closed, "connection still open 15s after a negative size prefix"
    assert_serves(broker)


@pytest.mark.parametrize("api_key", [32767, 1234, -1], ids=["key32767", "key1234", "key-1"])
def test_unknown_api_key(broker, api_key):
    """An unknown API key gets an error response or a closed connection -- never a hang or a crash."""
    cid = 777
    with connect(broker) as s:
        s.sendall(frame(header(api_key, 0, cid) + b"\x00" * 16))
        closed, data = read_until_closed(s, 10)
    if not closed:
        # Still open: then it must have answered this request (an error response), not ignored it.
        assert len(data) >= 8, f"unknown api key {api_key}: no response and connection left open for 10s"
    if data:
        assert len(data) >= 8, f"short response {data!r}"
        size, got_cid = struct.unpack(">ii", data[:8])
        assert got_cid == cid, f"response correlation id {got_cid} != {cid}"
    assert_serves(broker)


def test_unsupported_version_of_known_api(broker):
    """Metadata v999: error response or close, and the broker keeps serving."""
    cid = 778
    with connect(broker) as s:
        s.sendall(frame(header(3, 999, cid) + struct.pack(">i", -1)))
        closed, data = read_until_closed(s, 10)
    if not closed:
        assert len(data) >= 8, "Metadata v999: no response and connection left open for 10s"
    if data:
        assert struct.unpack(">i", data[4:8])[0] == cid
    assert_serves(broker)


def test_apiversions_unsupported_version_gets_v0_error(broker):
    """KIP-511: ApiVersions with a too-new version is answered (v0 layout) with UNSUPPORTED_VERSION (35)
    and the list of supported versions, so clients can downgrade."""
    cid = 779
    with connect(broker) as s:
        # Newer-than-known versions are flexible: header v2 = header v1 + empty tagged fields (0x00);
        # body v3+ = compact string client_software_name, compact string client_software_version
        # (compact string = unsigned varint len+1, bytes), then empty tagged fields (0x00).
        body = b"\x0dfjord-compat\x0312" + b"\x00"
        s.sendall(frame(header(18, 999, cid) + b"\x00" + body))
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        resp = recv_exact(s, size)
    got_cid, err, n = struct.unpack(">ihi", resp[:10])
    assert got_cid == cid
    assert err == 35, f"ApiVersions v999 error_code {err}, expected 35 UNSUPPORTED_VERSION"
    keys = {struct.unpack(">h", resp[10 + 6 * i: 12 + 6 * i])[0] for i in range(n)}
    assert 18 in keys, "UNSUPPORTED_VERSION response must still list ApiVersions' own version range"
    assert_serves(broker)


def test_garbage_body(broker):
    """Metadata v1 whose body claims 1,000,000 topics but carries 3 bytes."""
    with connect(broker) as s:
        s.sendall(frame(header(3, 1, 780) + struct.pack(">i", 1_000_000) + b"abc"))
        closed, data = read_until_closed(s, 10)
    if not closed:
        assert len(data) >= 8, "garbage Metadata body: no response and connection left open for 10s"
    assert_serves(broker)


def test_disconnect_mid_request(broker):
    """Announce a 1 MiB request, send half of it, hang up."""
    with connect(broker) as s:
        payload = header(0, 3, 781) + b"\x00" * (1024 * 1024)
        s.sendall(struct.pack(">i", len(payload)) + payload[: len(payload) // 2])
        time.sleep(0.2)
    assert_serves(broker)


def test_disconnect_before_reading_response(broker):
    """Send 50 complete Metadata requests and close without reading any response."""
    with connect(broker) as s:
        s.sendall(b"".join(frame(header(3, 1, 900 + i) + struct.pack(">i", -1)) for i in range(50)))
    time.sleep(0.5)
    assert_serves(broker)


def test_many_abandoned_connections(broker):
    """200 connections that send a partial header and are dropped all at once."""
    socks = []
    try:
        for i in range(200):
            s = connect(broker)
            s.sendall(struct.pack(">i", 100) + b"\x00\x03")
            socks.append(s)
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5)
    assert_serves(broker)
