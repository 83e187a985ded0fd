"""Kafka's internal topics as clients see them: `__consumer_offsets` and `__transaction_state`
appear (on the coordinators' first use, as in Kafka) with is_internal=true in Metadata and in
DescribeTopicPartitions (what the Java client's `exclude.internal.topics` and franz-go's regex
subscriptions go by); `kafka-topics --exclude-internal` leaves them out; creating one again is
refused with TOPIC_ALREADY_EXISTS.
(Fjord keeps group offsets and transaction state in its metadata quorum, so these partitions
stay empty; what clients rely on is that they are listed and flagged.)
"""
from __future__ import annotations

import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import create_topic, unique, wait_for

pytestmark = pytest.mark.timeout(180)

INTERNAL = ("__consumer_offsets", "__transaction_state")


def use_coordinators(bootstrap: str, topic: str) -> None:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("internal-group"),
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    end = time.time() + 10
    while not c.assignment() and time.time() < end:
        c.poll(0.2)
    c.close()
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": unique("internal-txn")})
    p.init_transactions(30)


def test_internal_topics_are_listed_and_flagged(broker, kafka_bin):
    topic = unique("plain")
    create_topic(broker.bootstrap, topic, 1)
    use_coordinators(broker.bootstrap, topic)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    wait_for(lambda: set(INTERNAL) <= set(admin.list_topics(timeout=10).topics), 30,
             "both internal topics in Metadata")
    described = admin.describe_topics(TopicCollection([*INTERNAL, topic]))
    flags = {name: f.result(30).is_internal for name, f in described.items()}
    assert flags == {INTERNAL[0]: True, INTERNAL[1]: True, topic: False}, flags
    for name in INTERNAL:
        assert len(described[name].result(30).partitions) >= 1

    def topics_cli(*extra: str) -> set[str]:
        r = subprocess.run([str(kafka_bin / "kafka-topics"), "--bootstrap-server", broker.bootstrap,
                            "--list", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=90)
        assert r.returncode == 0, r.stderr
        return set(r.stdout.split())
    listed = topics_cli()
    assert set(INTERNAL) <= listed and topic in listed, listed
    without = topics_cli("--exclude-internal")
    assert not (set(INTERNAL) & without) and topic in without, without

    with pytest.raises(KafkaException) as raised:
        admin.create_topics([NewTopic(INTERNAL[0], 1, 1)])[INTERNAL[0]].result(30)
    assert raised.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS




def test_a_deleted_internal_topic_comes_back_on_the_next_coordinator_lookup(broker):
    """As in Kafka 4.3 (KRaft), deleting `__consumer_offsets` is accepted (by the Admin API and
    `kafka-topics --delete` alike); a group's next FindCoordinator creates it again."""
    topic = unique("plain")
    create_topic(broker.bootstrap, topic, 1)
    use_coordinators(broker.bootstrap, topic)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    wait_for(lambda: INTERNAL[0] in admin.list_topics(timeout=10).topics, 30,
             "__consumer_offsets in Metadata")
    admin.delete_topics([INTERNAL[0]])[INTERNAL[0]].result(30)
    wait_for(lambda: INTERNAL[0] not in admin.list_topics(timeout=10).topics, 30,
             "__consumer_offsets deleted")
    use_coordinators(broker.bootstrap, topic)
    wait_for(lambda: INTERNAL[0] in admin.list_topics(timeout=10).topics, 30,
             "__consumer_offsets created again")
