"""The KIP-848 consumer group protocol (`group.protocol=consumer`, Kafka 4's default-to-be):
librdkafka (confluent-kafka) and the Java client (Kafka's console consumer and
kafka-consumer-groups) against the broker.

  test_librdkafka_members_join_and_leave   10 records read by one member within 20 s (the case
      that read nothing before), then a second member joins: the partitions split between the
      two without overlap; the second leaves: the first holds every partition again; committed
      offsets are readable by an admin client.
  test_java_console_consumer_and_describe  the Java client reads a topic in a consumer-protocol
      group; kafka-consumer-groups --describe (ConsumerGroupDescribe) shows the member and the
      committed offsets; --list shows the group.
  test_a_classic_member_joining_a_consumer_protocol_group   a classic member joins a live
      consumer-protocol group (Kafka 4's bidirectional migration policy): it gets a share of
      the partitions, served through the classic APIs, without overlap.
  test_librdkafka_rolling_upgrade_from_classic_to_consumer   a classic group of two librdkafka
      members is upgraded member by member to group.protocol=consumer while records are
      produced: no record is lost, no partition is held by two members for longer than a
      client takes to notice a revocation, and both end as consumer-protocol members.
  test_librdkafka_rolling_downgrade_from_consumer_to_classic   the other way round: the group
      becomes classic again once its last consumer-protocol member left.
  test_java_rolling_upgrade_from_classic_to_consumer   the same with Kafka's console consumer
      restarted from group.protocol=classic to consumer; kafka-consumer-groups --describe
      --members shows the two consumer-protocol members at the end.
"""
from __future__ import annotations

import re
import subprocess
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import TARGET, create_topic, unique, wait_for

pytestmark = pytest.mark.timeout(180)


def produce(bootstrap: str, topic: str, n: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    failed = []
    for i in range(n):
        p.produce(topic, b"v%d" % i, key=b"k%d" % i, on_delivery=lambda e, _m: e and failed.append(e))
    assert p.flush(30) == 0 and not failed, f"produce failed: {failed[:3]}"


class Member(threading.Thread):
    """A confluent-kafka consumer with group.protocol=consumer, polling until told to stop."""

    def __init__(self, bootstrap: str, topic: str, group: str, name: str, protocol: str = "consumer"):
        super().__init__(name=name, daemon=True)
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "group.protocol": protocol,
            "auto.offset.reset": "earliest", "enable.auto.commit": False, "client.id": name,
        })
        self.topic = topic
        self.consumer_assignment: list[TopicPartition] = []
        self.values: list[bytes] = []
        self.errors: list[str] = []
        # Commits refused while the group rebalances (the record is read again: at least once).
        self.commit_errors: list[str] = []
        self.stop = threading.Event()
        self.closed = threading.Event()

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self.consumer_assignment}

    def run(self) -> None:
        self.consumer.subscribe([self.topic])
        try:
            while not self.stop.is_set():
                m = self.consumer.poll(0.2)
                self.consumer_assignment = self.consumer.assignment()
                if m is None:
                    continue
                if m.error():
                    self.errors.append(str(m.error()))
                    continue
                self.values.append(m.value())
                try:
                    self.consumer.commit(message=m, asynchronous=False)
                except KafkaException as e:
                    self.commit_errors.append(str(e))
        finally:
            self.consumer.close()
            self.closed.set()


def test_librdkafka_members_join_and_leave(broker):
    topic, group = unique("kip848"), unique("kip848-group")
    create_topic(broker.bootstrap, topic, 4)
    produce(broker.bootstrap, topic, 10)
    first = Member(broker.bootstrap, topic, group, "member-1")
    first.start()
    try:
        wait_for(lambda: len(first.values) >= 10, 20, "10 records read by a group.protocol=consumer member")
        assert sorted(first.values) == sorted(b"v%d" % i for i in range(10))
        wait_for(lambda: first.assignment() == {0, 1, 2, 3}, 15, "the lone member to hold all 4 partitions")

        second = Member(broker.bootstrap, topic, group, "member-2")
        second.start()

        def split() -> bool:
            a, b = first.assignment(), second.assignment()
            return bool(a) and bool(b) and not (a & b) and a | b == {0, 1, 2, 3}

        wait_for(split, 40, "the partitions to split between two members without overlap")
        second.stop.set()
        assert second.closed.wait(30), "the second member did not close"
        wait_for(lambda: first.assignment() == {0, 1, 2, 3}, 40,
                 "the remaining member to hold all 4 partitions again")
        assert not first.errors and not second.errors, f"consumer errors: {first.errors + second.errors}"
    finally:
        first.stop.set()
        assert first.closed.wait(30), "the first member did not close"

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    from confluent_kafka import ConsumerGroupTopicPartitions
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(30)
    committed = {tp.partition: tp.offset for tp in res.topic_partitions}
    assert sum(o for o in committed.values() if o > 0) == 10, f"committed offsets {committed}"


def run_tool(kafka_bin, tool: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    cmd = [str(kafka_bin / tool), *args]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    assert r.returncode == 0, f"{tool} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r


def test_java_console_consumer_and_describe(broker, kafka_bin):
    topic, group = unique("kip848-java"), unique("kip848-java-group")
    create_topic(broker.bootstrap, topic, 3)
    produce(broker.bootstrap, topic, 30)
    out = run_tool(kafka_bin, "kafka-console-consumer", "--bootstrap-server", broker.bootstrap,
                   "--topic", topic, "--group", group, "--from-beginning", "--max-messages", "30",
                   "--consumer-property", "group.protocol=consumer", "--timeout-ms", "30000").stdout
    # Kafka 4.3's tools also print a deprecation note for --consumer-property to stdout.
    values = [line for line in out.split() if re.fullmatch(r"v\d+", line)]
    assert sorted(values) == sorted(f"v{i}" for i in range(30)), f"console consumer read:\n{out}"

    listed = run_tool(kafka_bin, "kafka-consumer-groups", "--bootstrap-server", broker.bootstrap,
                      "--list").stdout.split()
    assert group in listed, f"{group} not listed: {listed}"
    described = run_tool(kafka_bin, "kafka-consumer-groups", "--bootstrap-server", broker.bootstrap,
                         "--describe", "--group", group).stdout
    rows = re.findall(rf"{re.escape(group)}\s+{re.escape(topic)}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", described)
    assert len(rows) == 3, f"expected 3 partition rows:\n{described}"
    assert sum(int(current) for _, current, _, _ in rows) == 30, f"committed offsets:\n{described}"
    assert all(lag == "0" for _, _, _, lag in rows), f"lag left:\n{described}"

    # While a consumer-protocol member is in the group, --describe --members shows it
    # (answered by ConsumerGroupDescribe).
    proc = subprocess.Popen(
        [str(kafka_bin / "kafka-console-consumer"), "--bootstrap-server", broker.bootstrap, "--topic", topic,
         "--group", group, "--consumer-property", "group.protocol=consumer",
         "--consumer-property", "client.id=java-kip848"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def member_listed() -> bool:
            r = subprocess.run([str(kafka_bin / "kafka-consumer-groups"), "--bootstrap-server", broker.bootstrap,
                                "--describe", "--group", group, "--members", "--verbose"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
            member_listed.last = r.stdout + r.stderr
            return "java-kip848" in r.stdout and re.search(r"java-kip848\s+3\b", r.stdout) is not None
        member_listed.last = ""
        try:
            wait_for(member_listed, 60, "the Java member with 3 partitions in --describe --members")
        except AssertionError as e:
            raise AssertionError(f"{e}\nlast output:\n{member_listed.last}") from None
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_classic_member_joining_a_consumer_protocol_group(broker):
    """Kafka 4's bidirectional migration policy: a classic member joins a consumer-protocol
    group, gets a share of the partitions (served through JoinGroup/SyncGroup by the consumer
    group) and no partition is held by both members once they settle."""
    topic, group = unique("kip848-mix"), unique("kip848-mix-group")
    create_topic(broker.bootstrap, topic, 2)
    produce(broker.bootstrap, topic, 4)
    modern = Member(broker.bootstrap, topic, group, "modern")
    modern.start()
    try:
        wait_for(lambda: modern.assignment() == {0, 1}, 20, "the consumer-protocol member to hold both partitions")
        classic = Member(broker.bootstrap, topic, group, "classic", protocol="classic")
        classic.start()
        try:
            def split() -> bool:
                a, b = modern.assignment(), classic.assignment()
                return len(a) == 1 and len(b) == 1 and not (a & b)
            wait_for(split, 40, "the classic and the consumer-protocol member to hold one partition each")
            assert not modern.errors and not classic.errors, f"consumer errors: {modern.errors + classic.errors}"
        finally:
            classic.stop.set()
            assert classic.closed.wait(30)
        wait_for(lambda: modern.assignment() == {0, 1}, 40,
                 "the consumer-protocol member to hold both partitions again after the classic one left")
    finally:
        modern.stop.set()
        assert modern.closed.wait(30)


class SteadyProducer(threading.Thread):
    """Produces "v<i>" records, one every few milliseconds, until stopped."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(name="producer", daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
        self.topic = topic
        self.sent = 0
        self.failed: list = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.producer.produce(self.topic, b"v%d" % self.sent, key=b"k%d" % self.sent,
                                  on_delivery=lambda e, _m: e and self.failed.append(e))
            self.sent += 1
            self.producer.poll(0)
            time.sleep(0.01)
        assert self.producer.flush(30) == 0


class OverlapWatch(threading.Thread):
    """Samples the members' assignments; remembers partitions held by two members at once for
    longer than `grace` seconds (a client's own view lags its group by up to a poll and a
    heartbeat, so a shorter overlap is not observable as a protocol fault)."""

    def __init__(self, members: list, grace: float = 6.0):
        super().__init__(name="overlap-watch", daemon=True)
        self.members = members
        self.grace = grace
        self.since: dict = {}
        self.faults: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            live = [m for m in list(self.members) if m.is_alive() and not m.stop.is_set()]
            now = time.monotonic()
            current = set()
            for i, a in enumerate(live):
                for b in live[i + 1:]:
                    for p in a.assignment() & b.assignment():
                        key = (a.name, b.name, p)
                        current.add(key)
                        first = self.since.setdefault(key, now)
                        if now - first > self.grace and key not in [f[0] for f in self.faults]:
                            self.faults.append((key, now - first))
            self.since = {k: v for k, v in self.since.items() if k in current}
            time.sleep(0.1)


def rolling_restart(broker, start: str, end: str) -> None:
    """Two members of group.protocol=`start` restarted one by one with `end` while records are
    produced: every record is read, no partition stays with two members, both end as `end`."""
    topic, group = unique("kip848-rolling"), unique("kip848-rolling-group")
    create_topic(broker.bootstrap, topic, 4)
    producer = SteadyProducer(broker.bootstrap, topic)
    producer.start()
    members = [Member(broker.bootstrap, topic, group, f"{start}-1", protocol=start),
               Member(broker.bootstrap, topic, group, f"{start}-2", protocol=start)]
    for m in members:
        m.start()
    watch = OverlapWatch(members)
    watch.start()

    def split(a, b) -> bool:
        x, y = a.assignment(), b.assignment()
        return bool(x) and bool(y) and not (x & y) and x | y == {0, 1, 2, 3}

    try:
        wait_for(lambda: split(members[0], members[1]), 40, f"the two {start} members to split 4 partitions")
        for i in range(2):
            old = members[i]
            old.stop.set()
            assert old.closed.wait(30), f"{old.name} did not close"
            new = Member(broker.bootstrap, topic, group, f"{end}-{i + 1}", protocol=end)
            members.append(new)
            new.start()
            other = members[1] if i == 0 else members[2]
            wait_for(lambda: split(new, other), 60,
                     f"{new.name} (group.protocol={end}) and {other.name} to split the partitions")
            time.sleep(2)
        producer.stop.set()
        producer.join(40)
        assert not producer.failed, f"produce failed: {producer.failed[:3]}"
        expected = {b"v%d" % i for i in range(producer.sent)}

        def all_read() -> bool:
            got = set()
            for m in members:
                got.update(m.values)
            all_read.missing = expected - got
            return not all_read.missing
        all_read.missing = expected
        try:
            wait_for(all_read, 60, f"all {len(expected)} records to be read")
        except AssertionError as e:
            raise AssertionError(f"{e}: {len(all_read.missing)} missing, e.g. {sorted(all_read.missing)[:5]}") from None
        assert split(members[2], members[3]), f"the two {end} members no longer split the partitions"
        errors = [e for m in members for e in m.errors]
        assert not errors, f"consumer errors: {errors[:5]}"
        assert not watch.faults, f"partitions held by two members at once: {watch.faults}"

        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        desc = admin.describe_consumer_groups([group])[group].result(30)
        assert sorted(m.client_id for m in desc.members) == [f"{end}-1", f"{end}-2"], desc.members
        assert str(desc.type).upper().endswith(end.upper()), f"group type {desc.type}"
    finally:
        watch.stop.set()
        producer.stop.set()
        for m in members:
            m.stop.set()
        for m in members:
            if m.is_alive():
                m.closed.wait(30)


def test_librdkafka_rolling_upgrade_from_classic_to_consumer(broker):
    rolling_restart(broker, "classic", "consumer")


def test_librdkafka_rolling_downgrade_from_consumer_to_classic(broker):
    """Kafka's downgrade: once the last consumer-protocol member left, the group is classic
    again and its (classic) members rebalance among themselves."""
    rolling_restart(broker, "consumer", "classic")


class ConsoleConsumer:
    """Kafka's console consumer in a group with a given group.protocol, printing values."""

    def __init__(self, kafka_bin, bootstrap: str, topic: str, group: str, name: str, protocol: str):
        self.name = name
        self.out_path = f"/tmp/{group}-{name}.out"
        self.out = open(self.out_path, "w")
        self.proc = subprocess.Popen(
            [str(kafka_bin / "kafka-console-consumer"), "--bootstrap-server", bootstrap, "--topic", topic,
             "--group", group, "--from-beginning",
             "--consumer-property", f"group.protocol={protocol}",
             "--consumer-property", f"client.id={name}",
             "--consumer-property", "auto.commit.interval.ms=500"],
            stdout=self.out, stderr=subprocess.STDOUT, text=True)

    def values(self) -> set[str]:
        with open(self.out_path) as f:
            return {line.strip() for line in f if re.fullmatch(r"v\d+", line.strip())}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.out.close()


def describe_members(kafka_bin, bootstrap: str, group: str) -> str:
    r = subprocess.run([str(kafka_bin / "kafka-consumer-groups"), "--bootstrap-server", bootstrap,
                        "--describe", "--group", group, "--members", "--verbose"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    return r.stdout + r.stderr


@pytest.mark.timeout(420)
def test_java_rolling_upgrade_from_classic_to_consumer(broker, kafka_bin):
    topic, group = unique("kip848-jupgrade"), unique("kip848-jupgrade-group")
    create_topic(broker.bootstrap, topic, 4)
    producer = SteadyProducer(broker.bootstrap, topic)
    producer.start()
    consumers = [ConsoleConsumer(kafka_bin, broker.bootstrap, topic, group, f"classic-{i}", "classic")
                 for i in (1, 2)]
    read: set[str] = set()
    try:
        def members_with(names) -> bool:
            out = describe_members(kafka_bin, broker.bootstrap, group)
            members_with.last = out
            return all(re.search(rf"\b{n}\s+[1-4]\b", out) for n in names)
        members_with.last = ""

        def wait_members(names, what):
            try:
                wait_for(lambda: members_with(names), 90, what, interval=2)
            except AssertionError as e:
                raise AssertionError(f"{e}\nlast output:\n{members_with.last}") from None

        wait_members(["classic-1", "classic-2"], "two classic members holding partitions")
        for i in (1, 2):
            old = consumers[i - 1]
            old.stop()
            read |= old.values()
            consumers[i - 1] = ConsoleConsumer(kafka_bin, broker.bootstrap, topic, group, f"consumer-{i}", "consumer")
            other = "classic-2" if i == 1 else "consumer-1"
            wait_members([f"consumer-{i}", other], f"consumer-{i} (group.protocol=consumer) and {other} holding partitions")
        producer.stop.set()
        producer.join(40)
        assert not producer.failed, f"produce failed: {producer.failed[:3]}"
        expected = {f"v{i}" for i in range(producer.sent)}

        def all_read() -> bool:
            all_read.missing = expected - read - set().union(*(c.values() for c in consumers))
            return not all_read.missing
        all_read.missing = expected
        try:
            wait_for(all_read, 60, f"all {len(expected)} records to be read", interval=1)
        except AssertionError as e:
            raise AssertionError(f"{e}: {len(all_read.missing)} missing, e.g. {sorted(all_read.missing)[:5]}") from None
        out = describe_members(kafka_bin, broker.bootstrap, group)
        assert "classic-" not in out, f"a classic member is still listed:\n{out}"
        held = [int(n) for n in re.findall(r"\bconsumer-[12]\s+([0-4])\b", out)]
        assert len(held) == 2 and sum(held) == 4, f"the two consumer-protocol members do not hold the 4 partitions:\n{out}"
    finally:
        producer.stop.set()
        for c in consumers:
            if c.proc.poll() is None:
                c.stop()
