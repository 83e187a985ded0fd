"""Smaller real-client checks: kafka-python admin, timestamps, size limits, headers/nulls interop, group admin."""
from __future__ import annotations

import time

import pytest

from conftest import create_topic, end_offsets, unique, wait_for

pytestmark = pytest.mark.timeout(120)


def test_kafka_python_admin(broker):
    from confluent_kafka import Consumer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions, NewTopic

    t, g = unique("kp-admin"), unique("kp-admin-group")
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)
    try:
        r = a.create_topics([NewTopic(t, 2, 1, topic_configs={"retention.ms": "3600000"})])
        res = {x["name"]: x for x in r["topics"]}
        assert res[t]["error_code"] == 0, r
        wait_for(lambda: t in a.list_topics(), 30, f"{t} in list_topics")

        cfg = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t)])["topic"][t]
        assert cfg["retention.ms"]["value"] == "3600000", cfg
        assert cfg["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG", cfg["retention.ms"]

        r = a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, t, configs={"retention.ms": "7200000"})])
        assert r["topic"][t] == "OK", r
        # Apache applies config changes through its metadata log, so a describe right after the
        # alter may still show the old value: wait (bounded) for the new one.
        wait_for(lambda: a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t)])["topic"][t]
                 ["retention.ms"]["value"] == "7200000", 30, "retention.ms=7200000 in describe_configs")

        r = a.create_partitions({t: NewPartitions(4)})
        assert all(x.error_code == 0 for x in r.results), r
        wait_for(lambda: len(a.describe_topics([t])[0]["partitions"]) == 4, 30, f"{t} with 4 partitions")
        desc = a.describe_topics([t])[0]
        assert all(p["leader_id"] == 1 and p["isr_nodes"] == [1] for p in desc["partitions"]), desc

        # A group with committed offsets, made by another client.
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": g, "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition(t, 0, 5), TopicPartition(t, 1, 0)], asynchronous=False)
        c.close()
        groups = {x["group_id"]: x for x in a.list_groups()}
        assert g in groups, f"{g} not in list_groups(): {groups}"
        assert groups[g]["group_state"] == "Empty", groups[g]
        offs = a.list_group_offsets({g: None})[g]
        assert {tp.partition: om.offset for tp, om in offs.items() if tp.topic == t} == {0: 5, 1: 0}, offs
        a.delete_groups([g])
        assert g not in {x["group_id"] for x in a.list_groups()}, "group still listed after delete_groups"

        r = a.delete_topics([t])
        wait_for(lambda: t not in a.list_topics(), 30, f"{t} deleted")
    finally:
        a.close()


def test_offsets_for_times(broker):
    from confluent_kafka import Consumer, Producer, TopicPartition
    t = unique("ts")
    create_topic(broker.bootstrap, t, 1)
    t0 = int(time.time() * 1000) - 600_000
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i in range(10):
        p.produce(t, value=b"v%d" % i, timestamp=t0 + i * 1000)
        p.flush(10)  # one batch per record, so the time index has an entry for each
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("ts-g")})
    try:
        q = lambda ts: c.offsets_for_times([TopicPartition(t, 0, ts)], timeout=20)[0].offset  # noqa: E731
        assert q(t0) == 0
        assert q(t0 + 3500) == 4, "first offset with timestamp >= t0+3.5s must be 4"
        assert q(t0 + 9000) == 9
        assert q(t0 + 60_000) == -1, "no record that late: expected offset -1 (end)"
        c.assign([TopicPartition(t, 0, 2)])
        m = None
        deadline = time.monotonic() + 20
        while m is None and time.monotonic() < deadline:
            m = c.poll(0.5)
        assert m is not None and m.error() is None and m.offset() == 2
        assert m.timestamp() == (1, t0 + 2000), f"CreateTime not preserved: {m.timestamp()}"
    finally:
        c.close()


def test_message_size_limits(broker):
    """~900 KB is accepted (max.message.bytes default 1048588); 2 MB is refused with MSG_SIZE_TOO_LARGE."""
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
    t = unique("size")
    create_topic(broker.bootstrap, t, 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 8_000_000, "linger.ms": 0,
                  "message.timeout.ms": 20000, "compression.type": "none"})
    results = {}
    big_ok = bytes(range(256)) * 3600  # 921,600 bytes
    p.produce(t, value=big_ok, on_delivery=lambda e, m: results.__setitem__("ok", e))
    p.flush(20)
    p.produce(t, value=b"x" * 2_000_000, on_delivery=lambda e, m: results.__setitem__("big", e))
    p.flush(20)
    assert results.get("ok") is None and "ok" in results, f"900 KB record failed: {results.get('ok')}"
    assert results.get("big") is not None, "2 MB record was accepted above max.message.bytes"
    assert results["big"].code() == KafkaError.MSG_SIZE_TOO_LARGE, f"2 MB record: {results['big']}"
    assert end_offsets(broker.bootstrap, t, 1) == {0: 1}

    # A consumer whose fetch limits are far below the record still gets it (KIP-74: the first
    # batch is always returned whole).
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("size-g"),
                  "message.max.bytes": 1000, "fetch.max.bytes": 1024, "max.partition.fetch.bytes": 1024,
                  "receive.message.max.bytes": 2_000_000})
    try:
        c.assign([TopicPartition(t, 0, 0)])
        m, deadline = None, time.monotonic() + 20
        while (m is None or m.error()) and time.monotonic() < deadline:
            m = c.poll(0.5)
        assert m is not None and m.error() is None and m.value() == big_ok
    finally:
        c.close()


def test_interop_headers_and_nulls(broker):
    """kafka-python writes headers, a null key, an empty value and a tombstone; confluent-kafka reads
    them back exactly, and the other way round."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTP
    t = unique("interop")
    create_topic(broker.bootstrap, t, 1)
    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    sent = [(b"k1", b"v1", [("h1", b"x"), ("h2", b"")]), (None, b"no-key", []), (b"k3", b"", [("h", b"y")]),
            (b"k4", None, [])]
    for k, v, h in sent:
        kp.send(t, key=k, value=v, headers=h).get(timeout=30)
    kp.close()

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("interop-g")})
    got = []
    try:
        c.assign([TopicPartition(t, 0, 0)])
        deadline = time.monotonic() + 20
        while len(got) < len(sent) and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append((m.key(), m.value(), [(k, v or b"") for k, v in (m.headers() or [])]))
    finally:
        c.close()
    assert got == sent, f"confluent read {got}, kafka-python wrote {sent}"

    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce(t, key=b"ck", value=b"cv", headers=[("from", b"librdkafka")])
    assert p.flush(20) == 0
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, consumer_timeout_ms=15000)
    try:
        kc.assign([KTP(t, 0)])
        kc.seek(KTP(t, 0), len(sent))
        rec = next(iter(kc))
    finally:
        kc.close()
    assert (rec.key, rec.value) == (b"ck", b"cv")
    assert [(k, v) for k, v in rec.headers] == [("from", b"librdkafka")]


def test_confluent_admin_groups(broker):
    """An active member shows up in ListGroups/DescribeGroups with its assignment; offsets are listed."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient
    t, g = unique("grp-admin"), unique("grp-admin-g")
    create_topic(broker.bootstrap, t, 2)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(20):
        p.produce(t, key=b"%d" % i, value=b"x")
    assert p.flush(20) == 0

    assigned = []
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": g, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "client.id": "grp-admin-client"})
    c.subscribe([t], on_assign=lambda cons, parts: assigned.extend(parts))
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    try:
        n, deadline = 0, time.monotonic() + 30
        while n < 20 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                n += 1
        assert n == 20, f"consumed {n} of 20"
        c.commit(asynchronous=False)

        listed = admin.list_consumer_groups(request_timeout=20).result(30)
        ids = {x.group_id for x in listed.valid}
        assert g in ids, f"{g} not listed: {ids}; errors {listed.errors}"
        desc = admin.describe_consumer_groups([g], request_timeout=20)[g].result(30)
        assert str(desc.state).upper().endswith("STABLE"), f"group state {desc.state}"
        assert len(desc.members) == 1 and desc.members[0].client_id == "grp-admin-client", desc.members
        parts = {tp.partition for tp in desc.members[0].assignment.topic_partitions}
        assert parts == {0, 1}, f"member assignment {parts}"
        from confluent_kafka import ConsumerGroupTopicPartitions
        offs = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g)])[g].result(30)
        got = {tp.partition: tp.offset for tp in offs.topic_partitions if tp.topic == t}
        assert got == end_offsets(broker.bootstrap, t, 2), f"listed offsets {got}"
    finally:
        c.close()
    # After the only member leaves, the group is Empty and can be deleted.
    wait_for(lambda: str(admin.describe_consumer_groups([g])[g].result(20).state).upper().endswith("EMPTY"),
             30, f"{g} to become Empty")
    admin.delete_consumer_groups([g], request_timeout=20)[g].result(30)
    listed = admin.list_consumer_groups(request_timeout=20).result(30)
    assert g not in {x.group_id for x in listed.valid}, f"{g} still listed after delete"


def test_acks_zero_and_acks_one(broker):
    from confluent_kafka import Producer
    t = unique("acks")
    create_topic(broker.bootstrap, t, 2)
    for acks, n in (("0", 3000), ("1", 3000)):
        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": acks, "linger.ms": 5})
        errs = []
        for i in range(n):
            p.produce(t, key=b"%d" % i, value=b"acks-%s-%d" % (acks.encode(), i),
                      on_delivery=lambda e, m: e and errs.append(e))
        assert p.flush(30) == 0 and not errs, f"acks={acks}: {errs[:3]}"
    # acks=0 gets no response, so give the broker a moment to append the last batches.
    wait_for(lambda: sum(end_offsets(broker.bootstrap, t, 2).values()) == 6000, 20, "6000 records")
