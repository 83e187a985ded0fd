"""SASL_SSL with SCRAM-SHA-512 against real clients: confluent-kafka (librdkafka) and Apache Kafka
4.3.1's Java console producer/consumer. The user is created with `kafka-configs --alter
--add-config 'SCRAM-SHA-512=[password=...]'` over the same broker's PLAINTEXT listener; the TLS
certificates come from a throwaway CA made with the openssl CLI. A wrong password gets
SASL_AUTHENTICATION_FAILED and no data.

Against Apache Kafka (FJORD_TEST_TARGET=apache) the broker gets the same listeners plus the JAAS
line Kafka needs for SCRAM on the SASL_SSL listener and a PEM keystore.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import TARGET, Broker, free_port, serve_module_broker, unique, wait_for

pytestmark = pytest.mark.timeout(300)

PASSWORD = "alice-s3cret"


def openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(args)}:\n{r.stdout}"


def make_pki(d: Path) -> dict[str, Path]:
    """CA + server certificate for 127.0.0.1/localhost; keystore = certificate + PKCS#8 key."""
    if not shutil.which("openssl"):
        # Never a silent skip: `cargo xtask test` installs it (xtask/src/deps.rs).
        pytest.fail("openssl CLI not installed (apt-get install openssl)", pytrace=False)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=fjord-compat-ca", cwd=d)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                               "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", "server.key", "-out", "server.pk8", cwd=d)
    keystore = d / "keystore.pem"
    keystore.write_text((d / "server.pk8").read_text() + (d / "server.crt").read_text())
    return {"ca": d / "ca.pem", "keystore": keystore}


@pytest.fixture(scope="module")
def broker_proc(tmp_path_factory):
    work = tmp_path_factory.mktemp("broker-sasl-tls")
    pki = make_pki(work)
    b = Broker(work)
    sasl_port = free_port()
    b.sasl_bootstrap = f"{b.host}:{sasl_port}"
    b.pki = pki
    common = {
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki["keystore"]),
    }
    if TARGET == "apache":
        b.extra = {
            **common,
            "listeners": f"PLAINTEXT://{b.bootstrap},SASL_SSL://{b.sasl_bootstrap},"
                         f"CONTROLLER://{b.host}:{b.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{b.bootstrap},SASL_SSL://{b.sasl_bootstrap}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        }
    else:
        b.extra = {
            **common,
            "listeners": f"PLAINTEXT://{b.bootstrap},SASL_SSL://{b.sasl_bootstrap}",
        }
    yield from serve_module_broker(b)


def run(kafka_bin, tool: str, *args: str, input: str | None = None, check: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [str(kafka_bin / tool), *args]
    try:
        r = subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{tool} timed out after {timeout}s: {' '.join(cmd)}\n"
                             f"stdout:\n{e.stdout}\nstderr:\n{e.stderr}") from None
    if check:
        assert r.returncode == 0, (f"{tool} exited {r.returncode}: {' '.join(cmd)}\n"
                                   f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}")
    return r


def create_user(kafka_bin, broker, user: str, password: str) -> None:
    run(kafka_bin, "kafka-configs", "--bootstrap-server", broker.bootstrap, "--alter", "--add-config",
        f"SCRAM-SHA-512=[password={password}]", "--entity-type", "users", "--entity-name", user)


def librdkafka_conf(broker, user: str, password: str) -> dict:
    return {
        "bootstrap.servers": broker.sasl_bootstrap,
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": str(broker.pki["ca"]),
    }


def test_confluent_kafka_scram_sha512_over_sasl_ssl(broker, kafka_bin):
    from confluent_kafka import Consumer, Producer
    user, topic = unique("alice"), unique("sasl-ssl")
    create_user(kafka_bin, broker, user, PASSWORD)
    conf = librdkafka_conf(broker, user, PASSWORD)
    p = Producer(conf)
    values = [f"v-{i}" for i in range(200)]
    delivered = []
    for v in values:
        p.produce(topic, v.encode(), on_delivery=lambda e, m: delivered.append(e))
    assert p.flush(60) == 0
    assert delivered and all(e is None for e in delivered), delivered[:3]
    c = Consumer({**conf, "group.id": unique("g"), "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < len(values) and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value().decode())
    c.close()
    assert got == values


def test_confluent_kafka_wrong_password_gets_nothing(broker, kafka_bin):
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient
    user = unique("mallory")
    create_user(kafka_bin, broker, user, PASSWORD)
    errors = []
    admin = AdminClient({**librdkafka_conf(broker, user, "not-the-password"), "error_cb": errors.append})
    with pytest.raises(Exception):
        admin.list_topics(timeout=5)
    def failed():
        admin.poll(0.2)  # error callbacks are served from poll()
        return any(e.code() == KafkaError._AUTHENTICATION for e in errors)
    wait_for(failed, 15, "an authentication error callback")
    text = " ".join(e.str() for e in errors)
    assert "SASL_AUTHENTICATION_FAILED" in text or "Authentication failed" in text, text


def test_java_console_clients_scram_sha512_over_sasl_ssl(broker, kafka_bin, tmp_path):
    user, topic = unique("javauser"), unique("java-sasl-ssl")
    create_user(kafka_bin, broker, user, PASSWORD)
    props = tmp_path / "client.properties"
    props.write_text(
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{user}" password="{PASSWORD}";\n'
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={broker.pki['ca']}\n")
    lines = [f"java-{i}" for i in range(50)]
    run(kafka_bin, "kafka-console-producer", "--bootstrap-server", broker.sasl_bootstrap, "--topic", topic,
        "--command-config", str(props), input="\n".join(lines) + "\n")
    r = run(kafka_bin, "kafka-console-consumer", "--bootstrap-server", broker.sasl_bootstrap, "--topic", topic,
            "--command-config", str(props), "--from-beginning", "--max-messages", str(len(lines)),
            "--timeout-ms", "30000")
    assert r.stdout.splitlines() == lines, r.stdout[-2000:] + r.stderr[-2000:]

    # The same client with a wrong password fails to authenticate and reads nothing.
    bad = tmp_path / "bad.properties"
    bad.write_text(props.read_text().replace(PASSWORD, "wrong-password"))
    r = run(kafka_bin, "kafka-console-consumer", "--bootstrap-server", broker.sasl_bootstrap, "--topic", topic,
            "--command-config", str(bad), "--from-beginning", "--max-messages", "1", "--timeout-ms", "10000",
            check=False, timeout=60)
    assert r.stdout.strip() == "", r.stdout
    assert "SaslAuthenticationException" in r.stderr or "Authentication failed" in r.stderr, r.stderr[-2000:]
