"""SCRAM credentials, ACLs and client quotas managed with Apache Kafka 4.3.1's CLI tools
(kafka-configs, kafka-acls): what is stored is what the tools read back, bad input is refused with
Kafka's errors, and everything survives a broker restart.

Storage and admin only: nothing here logs in with SCRAM or is refused by an ACL (enforcement is a
later issue). Against Apache Kafka (FJORD_TEST_TARGET=apache) the broker runs with the
StandardAuthorizer and ANONYMOUS as a super user, since Kafka's ACL APIs need an authorizer.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import subprocess

import pytest

from conftest import TARGET, Broker, serve_module_broker, unique

pytestmark = pytest.mark.timeout(300)

APACHE_EXTRA = {
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "super.users": "User:ANONYMOUS",
}


@pytest.fixture(scope="module")
def broker_proc(tmp_path_factory):
    """This module's broker; for Apache Kafka with an authorizer so the ACL APIs are enabled."""
    b = Broker(tmp_path_factory.mktemp("broker-security"), extra=APACHE_EXTRA if TARGET == "apache" else {})
    yield from serve_module_broker(b)


def restart(broker: Broker) -> None:
    broker.stop()
    broker.start(timeout=90 if TARGET == "apache" else 30)


def run(kafka_bin, tool: str, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [str(kafka_bin / tool), *args]
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{tool} timed out after {timeout}s: {' '.join(cmd)}\n"
                             f"stdout:\n{e.stdout}\nstderr:\n{e.stderr}") from None
    if check:
        assert r.returncode == 0, (f"{tool} exited {r.returncode}: {' '.join(cmd)}\n"
                                   f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}")
    return r


def configs(kafka_bin, broker, *args, **kw):
    return run(kafka_bin, "kafka-configs", "--bootstrap-server", broker.bootstrap, *args, **kw)


def acls_cli(kafka_bin, broker, *args, **kw):
    return run(kafka_bin, "kafka-acls", "--bootstrap-server", broker.bootstrap, *args, **kw)


def scram_all(out: str) -> dict[str, dict[str, int]]:
    """'SCRAM credential configs for user-principal 'u' are M=iterations=N, ...' lines ->
    {user: {mechanism: iterations}} (Kafka lists mechanisms in no fixed order)."""
    return {user: {k: int(v) for k, v in re.findall(r"(SCRAM-SHA-\d+)=iterations=(\d+)", rest)}
            for user, rest in re.findall(r"SCRAM credential configs for user-principal '(.*?)' are (.*)", out)}


def scram_of(kafka_bin, broker, user: str) -> dict[str, int]:
    """mechanism -> iterations from `kafka-configs --describe --entity-type users --entity-name`."""
    out = configs(kafka_bin, broker, "--describe", "--entity-type", "users", "--entity-name", user).stdout
    return scram_all(out).get(user, {})


def quotas_of(out: str) -> dict[str, dict[str, float]]:
    """'Quota configs for <entity> are k=v, k=v' lines -> {entity text: {k: v}}."""
    res = {}
    for entity, values in re.findall(r"Quota configs for (.*) are (.*)", out):
        res[entity] = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.E+-]+)", values)}
    return res


def describe_quotas(kafka_bin, broker, *entity_args) -> dict[str, dict[str, float]]:
    return quotas_of(configs(kafka_bin, broker, "--describe", *entity_args).stdout)


ACL_RESOURCE = re.compile(r"ResourcePattern\(resourceType=(\w+), name=(.*?), patternType=(\w+)\)")
ACL_ENTRY = re.compile(r"\(principal=(.*?), host=(.*?), operation=(\w+), permissionType=(\w+)\)")


def acl_set(out: str) -> set[tuple[str, ...]]:
    """Parse `kafka-acls --list` output into (type, name, pattern, principal, host, op, perm)."""
    res, current = set(), None
    for line in out.splitlines():
        if line.startswith("Current ACLs for resource"):
            m = ACL_RESOURCE.search(line)
            assert m, line
            current = m.groups()
        elif (m := ACL_ENTRY.search(line)) and current:
            res.add(current + m.groups())
    return res


def list_acls(kafka_bin, broker, *args) -> set[tuple[str, ...]]:
    return acl_set(acls_cli(kafka_bin, broker, "--list", *args).stdout)


# --------------------------------------------------------------------------------------------
# SCRAM credentials
# --------------------------------------------------------------------------------------------

def test_scram_credentials(broker, kafka_bin):
    alice, bob = unique("alice"), unique("bob")
    out = configs(kafka_bin, broker, "--alter", "--add-config", "SCRAM-SHA-512=[iterations=8192,password=alice-secret]",
                  "--entity-type", "users", "--entity-name", alice).stdout
    assert f"Completed updating config for user {alice}." in out, out
    configs(kafka_bin, broker, "--alter", "--add-config", "SCRAM-SHA-256=[iterations=4096,password=alice-secret]",
            "--entity-type", "users", "--entity-name", alice)
    configs(kafka_bin, broker, "--alter", "--add-config", "SCRAM-SHA-256=[iterations=16384,password=bob-secret]",
            "--entity-type", "users", "--entity-name", bob)
    assert scram_of(kafka_bin, broker, alice) == {"SCRAM-SHA-256": 4096, "SCRAM-SHA-512": 8192}
    assert scram_of(kafka_bin, broker, bob) == {"SCRAM-SHA-256": 16384}
    everyone = scram_all(configs(kafka_bin, broker, "--describe", "--entity-type", "users").stdout)
    assert everyone.get(alice) == {"SCRAM-SHA-256": 4096, "SCRAM-SHA-512": 8192}, everyone
    assert everyone.get(bob) == {"SCRAM-SHA-256": 16384}, everyone

    # Replacing a credential changes its iterations.
    configs(kafka_bin, broker, "--alter", "--add-config", "SCRAM-SHA-512=[iterations=12000,password=new-secret]",
            "--entity-type", "users", "--entity-name", alice)
    assert scram_of(kafka_bin, broker, alice)["SCRAM-SHA-512"] == 12000

    # Above Kafka's maximum of 16384: refused by the broker (the tool checks only the minimum).
    r = configs(kafka_bin, broker, "--alter", "--add-config", "SCRAM-SHA-256=[iterations=20000,password=x]",
                "--entity-type", "users", "--entity-name", bob, check=False)
    assert r.returncode != 0 and "UnacceptableCredentialException" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "Too many iterations" in r.stdout + r.stderr, r.stdout + r.stderr
    assert scram_of(kafka_bin, broker, bob) == {"SCRAM-SHA-256": 16384}

    configs(kafka_bin, broker, "--alter", "--delete-config", "SCRAM-SHA-256", "--entity-type", "users", "--entity-name", alice)
    assert scram_of(kafka_bin, broker, alice) == {"SCRAM-SHA-512": 12000}
    r = configs(kafka_bin, broker, "--alter", "--delete-config", "SCRAM-SHA-256", "--entity-type", "users",
                "--entity-name", alice, check=False)
    assert r.returncode != 0 and "ResourceNotFoundException" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "Attempt to delete a user credential that does not exist" in r.stdout + r.stderr

    # A user without credentials describes as nothing.
    assert scram_of(kafka_bin, broker, unique("nobody")) == {}

    restart(broker)
    assert scram_of(kafka_bin, broker, alice) == {"SCRAM-SHA-512": 12000}
    assert scram_of(kafka_bin, broker, bob) == {"SCRAM-SHA-256": 16384}


def json_objects(value):
    """Every JSON object nested anywhere in `value`, depth first."""
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from json_objects(v)
    elif isinstance(value, list):
        for v in value:
            yield from json_objects(v)


@pytest.mark.skipif(TARGET != "fjord", reason="reads fjord's metadata log; Apache Kafka stores credentials differently")
def test_scram_stores_only_derived_keys(broker, kafka_bin):
    """The Java client's salted password reaches the broker intact, and only StoredKey/ServerKey
    (RFC 5802) are written: recompute them here from the stored salt with Python's hashlib."""
    user, password = unique("carol"), "carol-Pa55word"
    configs(kafka_bin, broker, "--alter", "--add-config", f"SCRAM-SHA-512=[iterations=8192,password={password}]",
            "--entity-type", "users", "--entity-name", user)
    configs(kafka_bin, broker, "--alter", "--add-config", f"SCRAM-SHA-256=[iterations=4096,password={password}]",
            "--entity-type", "users", "--entity-name", user)
    # Metadata lives in the Raft quorum's directory (a single node is a one-voter quorum): the
    # records sit inside the log's entries, and a snapshot may hold them too, so every file there
    # is searched for secrets.
    quorum = broker.data_dir / "__fjord_quorum"
    log = "\n".join(p.read_text(errors="replace") for p in sorted(quorum.rglob("*")) if p.is_file())
    entries = [json.loads(line) for line in (quorum / "log.jsonl").read_text().splitlines() if line.strip()]
    creds = {r["mechanism"]: r["credential"] for r in json_objects(entries)
             if r.get("type") == "UserScramCredential" and r.get("name") == user}
    assert set(creds) == {"SCRAM-SHA-256", "SCRAM-SHA-512"}, creds
    for mech, algo in (("SCRAM-SHA-256", "sha256"), ("SCRAM-SHA-512", "sha512")):
        c = creds[mech]
        assert set(c) == {"salt", "stored_key", "server_key", "iterations"}, c
        salt = bytes.fromhex(c["salt"])
        assert len(salt) > 0
        salted = hashlib.pbkdf2_hmac(algo, password.encode(), salt, c["iterations"])
        client_key = hmac.new(salted, b"Client Key", algo).digest()
        assert bytes.fromhex(c["stored_key"]) == hashlib.new(algo, client_key).digest(), mech
        assert bytes.fromhex(c["server_key"]) == hmac.new(salted, b"Server Key", algo).digest(), mech
        for secret in (salted.hex(), base64.b64encode(salted).decode(), password):
            assert secret not in log, f"{mech}: a secret was written to the metadata log"


# --------------------------------------------------------------------------------------------
# Client quotas
# --------------------------------------------------------------------------------------------

def test_client_quotas(broker, kafka_bin):
    alice, app = unique("qalice"), unique("qapp")
    user = ("--entity-type", "users", "--entity-name", alice)
    client = ("--entity-type", "clients", "--entity-name", app)
    configs(kafka_bin, broker, "--alter", "--add-config", "producer_byte_rate=1024,consumer_byte_rate=2048", *user)
    configs(kafka_bin, broker, "--alter", "--add-config", "request_percentage=12.5", *client)
    configs(kafka_bin, broker, "--alter", "--add-config", "producer_byte_rate=4096", *user, *client)
    configs(kafka_bin, broker, "--alter", "--add-config", "request_percentage=50", "--entity-type", "users", "--entity-default")
    configs(kafka_bin, broker, "--alter", "--add-config", "consumer_byte_rate=100", "--entity-type", "clients", "--entity-default")

    def check():
        u = describe_quotas(kafka_bin, broker, *user)
        assert u == {f"user-principal '{alice}'": {"producer_byte_rate": 1024.0, "consumer_byte_rate": 2048.0}}, u
        c = describe_quotas(kafka_bin, broker, *client)
        assert c == {f"client-id '{app}'": {"request_percentage": 12.5}}, c
        uc = describe_quotas(kafka_bin, broker, *user, *client)
        assert uc == {f"user-principal '{alice}', client-id '{app}'": {"producer_byte_rate": 4096.0}}, uc
        d = describe_quotas(kafka_bin, broker, "--entity-type", "users", "--entity-default")
        assert d == {"the default user-principal": {"request_percentage": 50.0}}, d
        all_clients = describe_quotas(kafka_bin, broker, "--entity-type", "clients")
        assert all_clients.get("the default client-id") == {"consumer_byte_rate": 100.0}, all_clients
        assert all_clients.get(f"client-id '{app}'") == {"request_percentage": 12.5}, all_clients
        all_users = describe_quotas(kafka_bin, broker, "--entity-type", "users")
        assert f"user-principal '{alice}'" in all_users and "the default user-principal" in all_users, all_users

    check()

    # A non-integral byte rate is refused by the broker (the tool passes it on as a double).
    r = configs(kafka_bin, broker, "--alter", "--add-config", "producer_byte_rate=1.5", *user, check=False)
    assert "InvalidRequestException" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "producer_byte_rate" in r.stdout + r.stderr
    # Quotas must be positive.
    r = configs(kafka_bin, broker, "--alter", "--add-config", "consumer_byte_rate=0", *user, check=False)
    assert "InvalidRequestException" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "must be greater than 0" in r.stdout + r.stderr, r.stdout + r.stderr
    # Unknown quota keys are refused (the tool refuses them before sending).
    r = configs(kafka_bin, broker, "--alter", "--add-config", "bogus_rate=5", *user, check=False)
    assert "bogus_rate" in r.stdout + r.stderr, r.stdout + r.stderr
    assert describe_quotas(kafka_bin, broker, *user)[f"user-principal '{alice}'"]["producer_byte_rate"] == 1024.0

    restart(broker)
    check()

    configs(kafka_bin, broker, "--alter", "--delete-config", "consumer_byte_rate", *user)
    assert describe_quotas(kafka_bin, broker, *user) == {f"user-principal '{alice}'": {"producer_byte_rate": 1024.0}}
    configs(kafka_bin, broker, "--alter", "--delete-config", "producer_byte_rate", *user)
    assert describe_quotas(kafka_bin, broker, *user) == {}
    configs(kafka_bin, broker, "--alter", "--delete-config", "consumer_byte_rate", "--entity-type", "clients", "--entity-default")
    assert "the default client-id" not in describe_quotas(kafka_bin, broker, "--entity-type", "clients")


# --------------------------------------------------------------------------------------------
# ACLs
# --------------------------------------------------------------------------------------------

def test_acls(broker, kafka_bin):
    topic, prefix, group, txn = unique("orders"), unique("pay") + "-", unique("grp"), unique("tx")
    alice, admin, mallory = unique("User:alice"), unique("User:admin"), unique("User:mallory")
    acls_cli(kafka_bin, broker, "--add", "--allow-principal", alice, "--operation", "Read", "--operation", "Describe",
             "--topic", topic)
    acls_cli(kafka_bin, broker, "--add", "--allow-principal", alice, "--operation", "Read", "--group", group)
    acls_cli(kafka_bin, broker, "--add", "--allow-principal", alice, "--operation", "Write", "--topic", prefix,
             "--resource-pattern-type", "prefixed")
    acls_cli(kafka_bin, broker, "--add", "--allow-principal", admin, "--operation", "ClusterAction", "--operation",
             "AlterConfigs", "--cluster")
    acls_cli(kafka_bin, broker, "--add", "--deny-principal", mallory, "--deny-host", "10.0.0.66", "--operation", "All",
             "--topic", topic)
    acls_cli(kafka_bin, broker, "--add", "--allow-principal", alice, "--allow-host", "192.168.1.7", "--operation", "Write",
             "--transactional-id", txn)
    # Adding an existing binding again changes nothing.
    acls_cli(kafka_bin, broker, "--add", "--allow-principal", alice, "--operation", "Read", "--topic", topic)

    lit, pre = "LITERAL", "PREFIXED"
    expected = {
        ("TOPIC", topic, lit, alice, "*", "READ", "ALLOW"),
        ("TOPIC", topic, lit, alice, "*", "DESCRIBE", "ALLOW"),
        ("TOPIC", topic, lit, mallory, "10.0.0.66", "ALL", "DENY"),
        ("GROUP", group, lit, alice, "*", "READ", "ALLOW"),
        ("TOPIC", prefix, pre, alice, "*", "WRITE", "ALLOW"),
        ("CLUSTER", "kafka-cluster", lit, admin, "*", "CLUSTER_ACTION", "ALLOW"),
        ("CLUSTER", "kafka-cluster", lit, admin, "*", "ALTER_CONFIGS", "ALLOW"),
        ("TRANSACTIONAL_ID", txn, lit, alice, "192.168.1.7", "WRITE", "ALLOW"),
    }
    mine = {alice, admin, mallory}

    def check(expected):
        everything = {a for a in list_acls(kafka_bin, broker) if a[3] in mine}
        assert everything == expected, f"missing {expected - everything}, unexpected {everything - expected}"
        by_topic = list_acls(kafka_bin, broker, "--topic", topic)
        assert by_topic == {a for a in expected if a[:3] == ("TOPIC", topic, lit)}, by_topic
        by_principal = list_acls(kafka_bin, broker, "--principal", alice)
        assert by_principal == {a for a in expected if a[3] == alice}, by_principal
        # MATCH: every binding that applies to topic "<prefix>x": the prefixed one.
        matching = {a for a in list_acls(kafka_bin, broker, "--topic", prefix + "x", "--resource-pattern-type", "match")
                    if a[3] in mine}
        assert matching == {a for a in expected if a[:3] == ("TOPIC", prefix, pre)}, matching

    check(expected)
    restart(broker)
    check(expected)

    # --remove deletes exactly the matching bindings.
    acls_cli(kafka_bin, broker, "--remove", "--force", "--deny-principal", mallory, "--deny-host", "10.0.0.66",
             "--operation", "All", "--topic", topic)
    acls_cli(kafka_bin, broker, "--remove", "--force", "--allow-principal", alice, "--operation", "Write",
             "--topic", prefix, "--resource-pattern-type", "prefixed")
    expected -= {("TOPIC", topic, lit, mallory, "10.0.0.66", "ALL", "DENY"), ("TOPIC", prefix, pre, alice, "*", "WRITE", "ALLOW")}
    check(expected)
    # Removing every ACL of the group resource.
    acls_cli(kafka_bin, broker, "--remove", "--force", "--group", group)
    expected = {a for a in expected if a[0] != "GROUP"}
    restart(broker)
    check(expected)


# --------------------------------------------------------------------------------------------
# Advertised versions
# --------------------------------------------------------------------------------------------

def test_security_api_versions(broker, kafka_bin):
    """The broker advertises the same ranges as Apache Kafka 4.3.1, and its Java client can use
    the newest of each (run with FJORD_TEST_TARGET=apache to see Kafka print the same lines)."""
    out = run(kafka_bin, "kafka-broker-api-versions", "--bootstrap-server", broker.bootstrap).stdout
    for want in ("DescribeAcls(29): 1 to 3 [usable: 3]", "CreateAcls(30): 1 to 3 [usable: 3]",
                 "DeleteAcls(31): 1 to 3 [usable: 3]", "DescribeClientQuotas(48): 0 to 1 [usable: 1]",
                 "AlterClientQuotas(49): 0 to 1 [usable: 1]", "DescribeUserScramCredentials(50): 0 [usable: 0]",
                 "AlterUserScramCredentials(51): 0 [usable: 0]"):
        assert want in out, f"{want!r} missing from kafka-broker-api-versions:\n{out}"
