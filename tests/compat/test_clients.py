"""confluent-kafka (librdkafka) and kafka-python: produce with every codec, consume in a group that
rebalances, commit, restart the broker, resume from the committed offsets.

Pieces (run in file order; later pieces use the module state left by earlier ones and fail --
never skip -- with a clear message when that state is missing):

  test_produce[client-codec]   100,000 keyed records per codec into one 6-partition topic per
                               client (500,000 records, all five codecs mixed in one log).
  test_group_consume[client]   phase A: a 3-member group (threads) consumes with manual commits
                               (periodic + on revocation); once all three members hold partitions
                               one member commits and leaves, the other two must take over all six
                               partitions; the group stops at ~55% consumed and commits.
  test_restart_resume[client]  the broker is stopped (SIGTERM) and started once for both clients;
                               phase B: a fresh 2-member group with the same group id resumes.

Assertions: every acknowledged record is consumed at least once across A+B with the right key,
value and a stable key->partition mapping; phase A re-delivers nothing; in phase B the first
record of every partition is exactly at the committed offset and nothing below a committed offset
is delivered again; at the end the committed offsets equal the log end offsets.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict

import pytest

from conftest import create_topic, end_offsets, unique

CLIENTS = ["confluent", "kafka-python"]
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
N_PER_CODEC = 100_000
PARTITIONS = 6
TOTAL = N_PER_CODEC * len(CODECS)
N_KEYS = 1000
FILLER = b"-fjord-compat-payload-" * 3
PHASE_A_FRACTION = 0.55
MEMBER_RATE = 12_000  # records/s per member cap, so that the rebalance happens mid-stream

STATE: dict[str, dict] = {c: {"topic": unique(f"compat-{c}"), "produced": {}, "groupA": None,
                              "committedA": None, "seenA": None} for c in CLIENTS}
RESTART = {"done": False}


def key_of(i: int) -> bytes:
    return b"key-%d" % (i % N_KEYS)


def value_of(codec: str, i: int) -> bytes:
    return b"%s|%d|" % (codec.encode(), i) + FILLER


def parse(key: bytes, value: bytes) -> tuple[str, int]:
    codec, i, rest = value.split(b"|", 2)
    i = int(i)
    assert rest == FILLER, f"corrupt value payload {value[:80]!r}"
    assert key == key_of(i), f"key {key!r} does not belong to value {value[:40]!r}"
    return codec.decode(), i


# --------------------------------------------------------------------------------------------
# produce
# --------------------------------------------------------------------------------------------

def produce_confluent(bootstrap: str, topic: str, codec: str) -> int:
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "acks": "all",
                  "linger.ms": 20, "batch.num.messages": 10000, "queue.buffering.max.messages": 200000,
                  "message.timeout.ms": 60000})
    ok, errors = [0], []

    def cb(err, msg):
        if err is None:
            ok[0] += 1
        else:
            errors.append(err)
    for i in range(N_PER_CODEC):
        while True:
            try:
                p.produce(topic, key=key_of(i), value=value_of(codec, i), on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    remaining = p.flush(90)
    assert remaining == 0, f"{remaining} records still undelivered after flush(90)"
    assert not errors, f"{len(errors)} delivery errors, first: {errors[0]}"
    return ok[0]


def produce_kafka_python(bootstrap: str, topic: str, codec: str) -> int:
    from kafka import KafkaProducer
    p = KafkaProducer(bootstrap_servers=bootstrap, compression_type=None if codec == "none" else codec,
                      acks="all", linger_ms=20, batch_size=256 * 1024, max_block_ms=60000,
                      request_timeout_ms=30000)
    ok, errors = [0], []

    def on_ok(_md):
        ok[0] += 1
    try:
        for i in range(N_PER_CODEC):
            f = p.send(topic, key=key_of(i), value=value_of(codec, i))
            f.add_callback(on_ok)
            f.add_errback(errors.append)
        p.flush(timeout=90)
    finally:
        p.close(timeout=30)
    assert not errors, f"{len(errors)} delivery errors, first: {errors[0]!r}"
    return ok[0]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("client", CLIENTS)
def test_produce(broker, client, codec):
    st = STATE[client]
    if not st["produced"]:
        create_topic(broker.bootstrap, st["topic"], PARTITIONS)
    before = sum(end_offsets(broker.bootstrap, st["topic"], PARTITIONS).values())
    fn = produce_confluent if client == "confluent" else produce_kafka_python
    acked = fn(broker.bootstrap, st["topic"], codec)
    assert acked == N_PER_CODEC, f"{acked} of {N_PER_CODEC} records acknowledged"
    after = end_offsets(broker.bootstrap, st["topic"], PARTITIONS)
    assert sum(after.values()) - before == N_PER_CODEC, \
        f"log end offsets grew by {sum(after.values()) - before}, expected {N_PER_CODEC}: {after}"
    assert sum(1 for v in after.values() if v > 0) == PARTITIONS, f"keys not spread over partitions: {after}"
    st["produced"][codec] = acked


# --------------------------------------------------------------------------------------------
# group members (one thread each)
# --------------------------------------------------------------------------------------------

class Shared:
    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0
        self.stop = threading.Event()
        self.errors: list[str] = []


class Member(threading.Thread):
    """A group member that records every delivered (partition, offset, key, value)."""

    def __init__(self, client: str, name: str, bootstrap: str, topic: str, group: str, shared: Shared,
                 rate: float | None = MEMBER_RATE):
        super().__init__(name=name, daemon=True)
        self.rate = rate
        self.client, self.bootstrap, self.topic, self.group, self.shared = client, bootstrap, topic, group, shared
        self.records: list[tuple[int, int, bytes, bytes]] = []
        self.assignment: set[int] = set()
        self.assign_events = 0
        self.leave = threading.Event()
        self.left = threading.Event()
        self.commits_ok = 0
        self.commit_errors: list[str] = []

    # each client implements _run(); errors land in shared.errors
    def run(self):
        try:
            self._run()
        except Exception as e:  # noqa: BLE001
            self.shared.errors.append(f"{self.name}: {e!r}")
        finally:
            self.left.set()

    def _throttle(self, started: float, n0: int):
        # Cap this member's rate so the group's membership changes happen mid-stream.
        if not self.rate:
            return
        expected = (len(self.records) - n0) / self.rate
        lag = expected - (time.monotonic() - started)
        if lag > 0:
            time.sleep(min(lag, 0.5))

    def _note(self, batch):
        self.records.extend(batch)
        with self.shared.lock:
            self.shared.count += len(batch)

    def _run(self):
        if self.client == "confluent":
            self._run_confluent()
        else:
            self._run_kafka_python()

    def _run_confluent(self):
        from confluent_kafka import Consumer, KafkaException
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False,
                      "session.timeout.ms": 10000, "heartbeat.interval.ms": 500,
                      "partition.assignment.strategy": "range", "fetch.wait.max.ms": 100,
                      "client.id": self.name})

        def commit():
            try:
                c.commit(asynchronous=False)
                self.commits_ok += 1
            except KafkaException as e:
                if e.args[0].code() != -168:  # _NO_OFFSET: nothing consumed since the last commit
                    self.commit_errors.append(str(e))

        def on_assign(consumer, parts):
            self.assignment = {p.partition for p in parts}
            self.assign_events += 1

        def on_revoke(consumer, parts):
            commit()
            self.assignment = set()

        c.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke)
        started, n0, last_commit = time.monotonic(), 0, 0
        try:
            while not self.shared.stop.is_set() and not self.leave.is_set():
                msgs = c.consume(500, 0.2)
                batch = []
                for m in msgs:
                    if m.error():
                        if m.error().code() != -191:  # _PARTITION_EOF
                            self.shared.errors.append(f"{self.name}: {m.error()}")
                        continue
                    batch.append((m.partition(), m.offset(), m.key(), m.value()))
                if batch:
                    self._note(batch)
                if len(self.records) - last_commit >= 5000:
                    commit()
                    last_commit = len(self.records)
                self._throttle(started, n0)
            commit()
        finally:
            c.close()  # revokes (-> on_revoke commit) and sends LeaveGroup

    def _run_kafka_python(self):
        from kafka import KafkaConsumer, AsyncConsumerRebalanceListener
        from kafka.errors import KafkaError
        c = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group,
                          auto_offset_reset="earliest", enable_auto_commit=False,
                          session_timeout_ms=10000, heartbeat_interval_ms=500, fetch_max_wait_ms=100,
                          client_id=self.name, max_poll_records=500)
        member = self

        def commit():
            try:
                c.commit()
                member.commits_ok += 1
            except KafkaError as e:
                member.commit_errors.append(repr(e))

        class Listener(AsyncConsumerRebalanceListener):
            # kafka-python 3 runs rebalance listeners on its IO thread, where the blocking commit()
            # is refused; the async listener awaits the coroutine behind commit() instead.
            async def on_partitions_revoked(self, revoked):
                try:
                    await c._coordinator._commit_offsets_sync_async(c._subscription.all_consumed_offsets())
                    member.commits_ok += 1
                except KafkaError as e:
                    member.commit_errors.append(f"on revoke: {e!r}")
                member.assignment = set()

            async def on_partitions_assigned(self, assigned):
                member.assignment = {tp.partition for tp in assigned}
                member.assign_events += 1

        c.subscribe([self.topic], listener=Listener())
        started, n0, last_commit = time.monotonic(), 0, 0
        try:
            while not self.shared.stop.is_set() and not self.leave.is_set():
                polled = c.poll(timeout_ms=200, max_records=500)
                batch = [(r.partition, r.offset, r.key, r.value) for recs in polled.values() for r in recs]
                if batch:
                    self._note(batch)
                if len(self.records) - last_commit >= 5000:
                    commit()
                    last_commit = len(self.records)
                self._throttle(started, n0)
            if c.assignment():
                commit()
        finally:
            c.close(autocommit=False)  # sends LeaveGroup


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, KafkaException, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        # Right after a restart the coordinator may still be loading offsets: NOT_COORDINATOR and
        # COORDINATOR_LOAD_IN_PROGRESS are retriable, as every client treats them; retry for 30 s.
        deadline = time.monotonic() + 30
        while True:
            try:
                res = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=20)
                break
            except KafkaException as e:
                if not e.args[0].retriable() and e.args[0].code() not in (14, 15, 16):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        out = {}
        for tp in res:
            assert tp.error is None, f"committed() error for partition {tp.partition}: {tp.error}"
            out[tp.partition] = tp.offset if tp.offset >= 0 else 0  # -1001 = no commit
        return out
    finally:
        c.close()


def wait_until(pred, timeout: float, what: str, shared: Shared):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if shared.errors:
            raise AssertionError(f"member error while waiting for {what}: {shared.errors[:3]}")
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def check_records(records, client, key_partition):
    """Validate payloads and the key->partition mapping; return ids per (partition, offset)."""
    by_po = {}
    for p, o, k, v in records:
        rid = parse(k, v)
        prev = key_partition.setdefault(k, p)
        assert prev == p, f"{client}: key {k!r} seen in partitions {prev} and {p}"
        if (p, o) in by_po:
            assert by_po[(p, o)] == rid, f"{client}: offset {p}/{o} delivered as {by_po[(p, o)]} and {rid}"
        by_po[(p, o)] = rid
    return by_po


@pytest.mark.timeout(300)
@pytest.mark.parametrize("client", CLIENTS)
def test_group_consume(broker, client):
    st = STATE[client]
    assert set(st["produced"]) == set(CODECS), \
        f"needs test_produce for all codecs first (produced: {sorted(st['produced'])})"
    ends = end_offsets(broker.bootstrap, st["topic"], PARTITIONS)
    assert sum(ends.values()) == TOTAL, f"log end offsets {ends} sum to {sum(ends.values())}, not {TOTAL}"

    group = unique(f"group-{client}")
    shared = Shared()
    members = [Member(client, f"{client}-A{i}", broker.bootstrap, st["topic"], group, shared) for i in range(3)]
    for m in members:
        m.start()
    leaver, stayers = members[2], members[:2]
    try:
        wait_until(lambda: all(m.assignment for m in members) and
                   set().union(*(m.assignment for m in members)) == set(range(PARTITIONS)),
                   60, "all three members to hold partitions", shared)
        assert shared.count < TOTAL * PHASE_A_FRACTION, "consumed too fast to rebalance mid-stream"
        wait_until(lambda: shared.count >= TOTAL * 0.2, 60, "20% consumed", shared)
        leaver.leave.set()
        assert leaver.left.wait(30), "leaving member did not close within 30s"
        wait_until(lambda: not leaver.is_alive() and all(m.assignment for m in stayers) and
                   set().union(*(m.assignment for m in stayers)) == set(range(PARTITIONS)),
                   60, "the two remaining members to take over all 6 partitions", shared)
        rebalanced_at = shared.count
        wait_until(lambda: shared.count >= TOTAL * PHASE_A_FRACTION, 120,
                   f"{PHASE_A_FRACTION:.0%} consumed", shared)
    finally:
        shared.stop.set()
        for m in members:
            m.join(30)
    assert not any(m.is_alive() for m in members), "a member did not stop within 30s"
    assert not shared.errors, f"consumer errors: {shared.errors[:5]}"
    for m in members:
        assert not m.commit_errors, f"{m.name} commit errors: {m.commit_errors[:3]}"
        assert m.commits_ok > 0, f"{m.name} never committed"
    assert all(m.assign_events >= 2 for m in stayers), \
        f"remaining members saw no rebalance: {[m.assign_events for m in stayers]}"
    assert rebalanced_at < TOTAL * PHASE_A_FRACTION

    records = [r for m in members for r in m.records]
    key_partition: dict[bytes, int] = {}
    by_po = check_records(records, client, key_partition)
    dup = Counter((p, o) for p, o, _, _ in records)
    dups = {po: n for po, n in dup.items() if n > 1}
    assert not dups, (f"{len(dups)} records delivered more than once in phase A despite commits on "
                      f"revocation, e.g. {sorted(dups.items())[:5]}")

    committed = committed_offsets(broker.bootstrap, group, st["topic"])
    seen_per_p = defaultdict(set)
    for p, o in by_po:
        seen_per_p[p].add(o)
    for p in range(PARTITIONS):
        c = committed[p]
        assert 0 <= c <= ends[p], f"partition {p}: committed {c} outside [0, {ends[p]}]"
        # Everything below the committed offset was delivered (a commit never runs ahead of delivery),
        # and delivery never ran past the committed position at shutdown (final commits succeeded).
        missing = [o for o in range(c) if o not in seen_per_p[p]]
        assert not missing, f"partition {p}: committed {c} but offsets {missing[:10]} never delivered"
        beyond = sorted(o for o in seen_per_p[p] if o >= c)
        assert not beyond, f"partition {p}: delivered {beyond[:10]} at/after the committed offset {c}"
    assert sum(committed.values()) == len(by_po)
    assert sum(committed.values()) < TOTAL, "phase A consumed everything; nothing left to resume"
    st.update(groupA=group, committedA=committed, seenA=by_po, key_partition=key_partition, ends=ends)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("client", CLIENTS)
def test_restart_resume(broker, client):
    st = STATE[client]
    assert st["committedA"] is not None, "needs test_group_consume for this client first"
    if not RESTART["done"]:
        broker.stop()
        broker.start()
        RESTART["done"] = True

    ends = end_offsets(broker.bootstrap, st["topic"], PARTITIONS)
    assert ends == st["ends"], f"log end offsets changed across restart: {st['ends']} -> {ends}"
    committed = committed_offsets(broker.bootstrap, st["groupA"], st["topic"])
    assert committed == st["committedA"], \
        f"committed offsets changed across restart: {st['committedA']} -> {committed}"

    shared = Shared()
    members = [Member(client, f"{client}-B{i}", broker.bootstrap, st["topic"], st["groupA"], shared, rate=None)
               for i in range(2)]
    remaining = TOTAL - sum(committed.values())
    for m in members:
        m.start()
    try:
        wait_until(lambda: shared.count >= remaining, 180, f"{remaining} remaining records", shared)
        time.sleep(1.0)  # anything re-delivered right after the last record shows up here
    finally:
        shared.stop.set()
        for m in members:
            m.join(30)
    assert not any(m.is_alive() for m in members), "a member did not stop within 30s"
    assert not shared.errors, f"consumer errors: {shared.errors[:5]}"
    for m in members:
        assert not m.commit_errors, f"{m.name} commit errors: {m.commit_errors[:3]}"

    records_b = [r for m in members for r in m.records]
    by_po_b = check_records(records_b, client, st["key_partition"])
    first = {}
    for m in members:
        for p, o, _, _ in m.records:
            first[p] = min(first.get(p, o), o)
    for p in range(PARTITIONS):
        below = sorted(o for (pp, o) in by_po_b if pp == p and o < committed[p])
        assert not below, f"partition {p}: re-delivered {below[:10]} below the committed offset {committed[p]}"
        if committed[p] < ends[p]:
            assert first.get(p) == committed[p], \
                f"partition {p}: resumed at {first.get(p)}, committed offset is {committed[p]}"

    # Every acknowledged record is seen at least once across phases A and B, each at one offset.
    all_po = dict(st["seenA"])
    for po, rid in by_po_b.items():
        assert po not in all_po or all_po[po] == rid, f"offset {po} changed content across restart"
        all_po[po] = rid
    ids = Counter(all_po.values())
    expected = {(c, i) for c in CODECS for i in range(N_PER_CODEC)}
    missing = expected - set(ids)
    assert not missing, f"{len(missing)} records never consumed, e.g. {sorted(missing)[:5]}"
    extra = set(ids) - expected
    assert not extra, f"unexpected records {sorted(extra)[:5]}"
    twice = [rid for rid, n in ids.items() if n > 1]
    assert not twice, f"{len(twice)} records stored at two offsets (producer duplicates), e.g. {twice[:5]}"

    final = committed_offsets(broker.bootstrap, st["groupA"], st["topic"])
    assert final == ends, f"final committed offsets {final} != log end offsets {ends}"
