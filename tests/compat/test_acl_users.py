"""Issue 6 acceptance with a real login: a SCRAM-SHA-512 user with only Read on topic `a` and Read
on one consumer group, on a broker with the authorizer on. Users and ACLs are managed with Apache
Kafka's `kafka-configs` and `kafka-acls` over a local PLAINTEXT listener whose principal
(`User:ANONYMOUS`) is a super user — the bootstrap pattern for the first credentials. The user,
through confluent-kafka on SASL_PLAINTEXT:

- cannot produce to `a` (TOPIC_AUTHORIZATION_FAILED),
- does not see topic `b` in Metadata,
- consumes `a` in its allowed group, and gets GROUP_AUTHORIZATION_FAILED in any other group.

A second user with WRITE on a topic needs WRITE on a transactional id (here a prefixed ACL) to
use transactions: without it, TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
"""
from __future__ import annotations


import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from conftest import TARGET, Broker, create_topic, free_port, serve_module_broker, unique
from test_sasl_tls import run

pytestmark = pytest.mark.timeout(300)

USER, PASSWORD = "reader", "reader-s3cret"


@pytest.fixture(scope="module")
def broker_proc(tmp_path_factory):
    work = tmp_path_factory.mktemp("broker-acl-users")
    b = Broker(work)
    b.sasl_bootstrap = f"{b.host}:{free_port()}"
    authz = {
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:ANONYMOUS",
    }
    if TARGET == "apache":
        b.extra = {
            **authz,
            "listeners": f"PLAINTEXT://{b.bootstrap},SASL_PLAINTEXT://{b.sasl_bootstrap},"
                         f"CONTROLLER://{b.host}:{b.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{b.bootstrap},SASL_PLAINTEXT://{b.sasl_bootstrap}",
            "listener.security.protocol.map":
                "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        }
    else:
        b.extra = {**authz, "listeners": f"PLAINTEXT://{b.bootstrap},SASL_PLAINTEXT://{b.sasl_bootstrap}"}
    yield from serve_module_broker(b)


def as_user(broker, **extra) -> dict:
    return {
        "bootstrap.servers": broker.sasl_bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": USER,
        "sasl.password": PASSWORD,
        **extra,
    }


def test_read_only_user_sees_and_does_only_what_its_acls_allow(broker, kafka_bin):
    a, b, group = unique("a"), unique("b"), unique("readers")
    create_topic(broker.bootstrap, a, 1)
    create_topic(broker.bootstrap, b, 1)
    run(kafka_bin, "kafka-configs", "--bootstrap-server", broker.bootstrap, "--alter", "--add-config",
        f"SCRAM-SHA-512=[password={PASSWORD}]", "--entity-type", "users", "--entity-name", USER)
    run(kafka_bin, "kafka-acls", "--bootstrap-server", broker.bootstrap, "--add",
        "--allow-principal", f"User:{USER}", "--operation", "Read", "--topic", a)
    run(kafka_bin, "kafka-acls", "--bootstrap-server", broker.bootstrap, "--add",
        "--allow-principal", f"User:{USER}", "--operation", "Read", "--group", group)
    listed = run(kafka_bin, "kafka-acls", "--bootstrap-server", broker.bootstrap, "--list",
                 "--principal", f"User:{USER}").stdout
    assert listed.count(f"principal=User:{USER}") == 2, listed

    # The super user writes three records the reader will consume.
    admin = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(3):
        admin.produce(a, value=f"r{i}".encode())
    assert admin.flush(30) == 0

    # Cannot produce to `a`.
    errors = []
    p = Producer(as_user(broker, **{"message.send.max.retries": 0, "delivery.timeout.ms": 15000}))
    p.produce(a, value=b"nope", on_delivery=lambda err, _msg: errors.append(err))
    p.flush(20)
    assert errors and errors[0] is not None, "produce without Write must fail"
    assert errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, errors[0]

    # Sees `a` but not `b`.
    c = Consumer(as_user(broker, **{"group.id": group, "auto.offset.reset": "earliest",
                                    "enable.auto.commit": False}))
    topics = c.list_topics(timeout=15).topics
    assert a in topics and b not in topics, sorted(topics)

    # Consumes `a` in its group.
    c.assign([TopicPartition(a, 0, 0)])
    got = []
    for _ in range(60):
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
        if len(got) == 3:
            break
    assert got == [b"r0", b"r1", b"r2"]
    c.commit(asynchronous=False)
    c.close()

    # Any other group is refused: the group error reaches the application, and no records do.
    other = Consumer(as_user(broker, **{"group.id": unique("other"), "auto.offset.reset": "earliest"}))
    other.subscribe([a])
    seen_error, records = None, 0
    for _ in range(40):
        m = other.poll(0.5)
        if m is None:
            continue
        if m.error() is not None:
            seen_error = m.error()
            if seen_error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                break
        else:
            records += 1
    other.close()
    assert records == 0
    assert seen_error is not None and seen_error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, seen_error


def test_transactions_need_write_on_the_transactional_id(broker, kafka_bin):
    """A user with WRITE on a topic but not on the transactional id cannot start transactions
    (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, fatal to the producer); once WRITE on the
    transactional id (a prefixed ACL) is granted, its transactions commit."""
    from confluent_kafka import KafkaException

    user, password = "txn-writer", "txn-writer-s3cret"
    topic, txn_id = unique("txn-acl"), unique("txn-acl-id")
    create_topic(broker.bootstrap, topic, 1)
    run(kafka_bin, "kafka-configs", "--bootstrap-server", broker.bootstrap, "--alter", "--add-config",
        f"SCRAM-SHA-512=[password={password}]", "--entity-type", "users", "--entity-name", user)
    for op in ("Write", "Describe"):
        run(kafka_bin, "kafka-acls", "--bootstrap-server", broker.bootstrap, "--add",
            "--allow-principal", f"User:{user}", "--operation", op, "--topic", topic)
    creds = {"bootstrap.servers": broker.sasl_bootstrap, "security.protocol": "SASL_PLAINTEXT",
             "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": password}
    denied = Producer({**creds, "transactional.id": txn_id})
    with pytest.raises(KafkaException) as raised:
        denied.init_transactions(30)
    assert raised.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, raised.value

    run(kafka_bin, "kafka-acls", "--bootstrap-server", broker.bootstrap, "--add",
        "--allow-principal", f"User:{user}", "--operation", "Write", "--transactional-id",
        txn_id.rsplit("-", 1)[0], "--resource-pattern-type", "prefixed")
    allowed = Producer({**creds, "transactional.id": txn_id})
    allowed.init_transactions(30)
    allowed.begin_transaction()
    allowed.produce(topic, b"in-a-transaction")
    allowed.commit_transaction(30)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("txn-acl-check"),
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    for _ in range(40):
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
            break
    c.close()
    assert got == [b"in-a-transaction"]
