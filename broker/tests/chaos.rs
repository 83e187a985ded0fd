//! No acknowledged write is lost while brokers die: idempotent `acks=all` producers
//! (`min.insync.replicas=2`, RF 3) and a consumer group run for two minutes while a chaos loop
//! kills a random broker (every third time the active controller) every few seconds and
//! restarts it. At the end every acknowledged record is read back exactly once, at the offset
//! it was acknowledged with, in order per producer and partition, with no offset gaps.
//!
//! Two runs: SIGKILL (no warning; sends may fail only by timing out, never be lost once acked)
//! and SIGTERM (controlled shutdown; zero failed sends after client retries). The counts go to
//! the test output.

#[path = "common/procs.rs"]
mod procs;
#[path = "security_support/mod.rs"]
mod security_support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use procs::{wait_for, ProcCluster};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

/// Prints what librdkafka says at notice level or above (idempotence epoch bumps, fatal
/// errors) with the producer's id: captured by the test harness and shown when a check fails,
/// so a duplicate or a loss can be traced to what the client did.
struct ProducerLog(usize);

impl ClientContext for ProducerLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Notice as i32) {
            println!("producer {} librdkafka {level:?} {fac}: {message}", self.0);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        println!("producer {} librdkafka error {error}: {reason}", self.0);
    }
}

const TOPIC: &str = "chaos";
const PARTITIONS: i32 = 6;
const CHAOS_FOR: Duration = Duration::from_secs(120);

/// Both runs start six broker processes; one at a time keeps them from starving each other
/// on a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Chaos {
    Kill,
    Terminate,
}

/// Client-side settings: extra librdkafka properties and the fjord-client security.
#[derive(Clone, Default)]
struct Clients {
    props: Vec<(String, String)>,
    security: fjord_client::ClientSecurity,
}

impl Clients {
    fn config(&self, bootstrap: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", bootstrap);
        for (k, v) in &self.props {
            c.set(k, v);
        }
        c
    }
}

/// What the producers saw.
#[derive(Default)]
struct Outcomes {
    /// value -> (partition, offset)
    acked: HashMap<String, (i32, i64)>,
    failed: Vec<(String, String)>,
}

fn describe(clients: &Clients, bootstrap: &str) -> (i32, BTreeMap<i32, (i32, usize)>) {
    let consumer: BaseConsumer = clients.config(bootstrap).create().unwrap();
    let Ok(md) = consumer.fetch_metadata(Some(TOPIC), Duration::from_secs(5)) else {
        return (-1, BTreeMap::new());
    };
    let parts = md
        .topics()
        .first()
        .map(|t| {
            t.partitions()
                .iter()
                .map(|p| (p.id(), (p.leader(), p.isr().len())))
                .collect()
        })
        .unwrap_or_default();
    (md.orig_broker_id(), parts)
}

/// The active controller's id, as a Metadata response names it.
fn controller(
    rt: &tokio::runtime::Runtime,
    cluster: &ProcCluster,
    clients: &Clients,
) -> Option<usize> {
    for i in 0..cluster.nodes.len() {
        if !cluster.is_running(i) {
            continue;
        }
        let id = rt.block_on(async {
            let mut c = fjord_client::Connection::connect_with(cluster.addr(i), &clients.security)
                .await
                .ok()?;
            let r = c
                .send(
                    &kafka_protocol::messages::MetadataRequest::default().with_topics(Some(vec![])),
                    12,
                )
                .await
                .ok()?;
            Some(r.controller_id.0)
        });
        if let Some(id) = id.filter(|id| *id >= 0) {
            return Some(id as usize);
        }
    }
    None
}

fn run(chaos: Chaos, secure: bool) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = procs::test_dir();
    let (mut extra, clients) = if secure {
        sasl_ssl_everywhere(dir.path())
    } else {
        (Vec::new(), Clients::default())
    };
    extra.push(("controlled.shutdown.timeout.ms".into(), "15000".into()));
    let extra: Vec<(&str, &str)> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut cluster = ProcCluster::start(dir.path(), 3, &extra);
    if secure {
        assert_quorum_speaks_mutual_tls(&cluster, dir.path());
        create_scram_user(&cluster, &clients);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bootstrap = cluster.bootstrap();
    procs::create_replicated_topic(&rt, clients.config(&bootstrap), TOPIC, PARTITIONS);
    wait_for("every replica in sync", 30, || {
        let (_, d) = describe(&clients, &bootstrap);
        d.len() == PARTITIONS as usize && d.values().all(|(l, isr)| *l >= 0 && *isr == 3)
    });

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let sent = Arc::new(AtomicU64::new(0));
    let mut producers = Vec::new();
    for id in 0..2 {
        let (stop, outcomes, sent, bootstrap, clients) = (
            stop.clone(),
            outcomes.clone(),
            sent.clone(),
            bootstrap.clone(),
            clients.clone(),
        );
        producers.push(std::thread::spawn(move || {
            produce_until(id, &clients, &bootstrap, &stop, &outcomes, &sent)
        }));
    }
    let consumed = Arc::new(AtomicU64::new(0));
    let consumer = {
        let (stop, consumed, bootstrap, clients) = (
            stop.clone(),
            consumed.clone(),
            bootstrap.clone(),
            clients.clone(),
        );
        std::thread::spawn(move || consume_until(&clients, &bootstrap, &stop, &consumed))
    };

    // The chaos loop.
    let started = Instant::now();
    let mut kills: Vec<String> = Vec::new();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15 ^ started.elapsed().as_nanos() as u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    while started.elapsed() < CHAOS_FOR {
        std::thread::sleep(Duration::from_millis(2_000 + next() % 2_000));
        let active = controller(&rt, &cluster, &clients);
        let victim = if kills.len() % 3 == 2 {
            active.unwrap_or(0)
        } else {
            (next() % 3) as usize
        };
        let what = match chaos {
            Chaos::Kill => {
                cluster.kill(victim);
                "SIGKILL".to_string()
            }
            Chaos::Terminate => {
                let took = cluster.terminate(victim);
                format!("SIGTERM (exited after {} ms)", took.as_millis())
            }
        };
        let is_controller = active == Some(victim);
        kills.push(format!(
            "{:>6.1}s {what} broker {victim}{}",
            started.elapsed().as_secs_f64(),
            if is_controller {
                " (active controller)"
            } else {
                ""
            }
        ));
        std::thread::sleep(Duration::from_millis(500 + next() % 1_500));
        cluster.spawn(victim);
        cluster.wait_ready(victim);
    }
    println!(
        "chaos ({chaos:?}{}) for {:?}:",
        if secure {
            ", SASL_SSL on client and inter-broker listeners, mutual TLS on the quorum listener"
        } else {
            ""
        },
        started.elapsed()
    );
    for k in &kills {
        println!("  {k}");
    }
    // Let the cluster heal, then stop the clients and wait for every delivery report.
    wait_for("every replica back in sync", 90, || {
        let (_, d) = describe(&clients, &bootstrap);
        d.len() == PARTITIONS as usize && d.values().all(|(l, isr)| *l >= 0 && *isr == 3)
    });
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Release);
    for p in producers {
        p.join().unwrap();
    }
    consumer.join().unwrap();

    let outcomes = outcomes.lock().unwrap();
    let read = read_everything(&clients, &bootstrap);
    println!(
        "sent {}, acknowledged {}, failed {}, consumed by the group while running {}, read back {}, kills {} ({} of the active controller)",
        sent.load(Ordering::Acquire),
        outcomes.acked.len(),
        outcomes.failed.len(),
        consumed.load(Ordering::Acquire),
        read.len(),
        kills.len(),
        kills.iter().filter(|k| k.contains("controller")).count()
    );
    for (v, e) in outcomes.failed.iter().take(5) {
        println!("  failed send {v}: {e}");
    }
    report_duplicates(dir.path(), &read);
    verify(&outcomes, &read);
    assert!(kills.len() >= 20, "only {} kills", kills.len());
    assert!(
        kills.iter().any(|k| k.contains("controller")),
        "the active controller was killed at least once"
    );
    assert!(
        outcomes.acked.len() > 5_000,
        "too little traffic to mean anything"
    );
    if chaos == Chaos::Terminate {
        assert!(
            outcomes.failed.is_empty(),
            "controlled shutdown: no send may fail after client retries: {:?}",
            &outcomes.failed[..outcomes.failed.len().min(5)]
        );
    }
}

/// Sends `p<id>-<n>` records (keyed, so each key stays on one partition) at a steady pace
/// with a bounded number in flight, recording each delivery report.
fn produce_until(
    id: usize,
    clients: &Clients,
    bootstrap: &str,
    stop: &AtomicBool,
    outcomes: &Mutex<Outcomes>,
    sent: &AtomicU64,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let producer: FutureProducer<ProducerLog> = clients
        .config(bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .set("request.timeout.ms", "10000")
        .set("retry.backoff.ms", "100")
        .set("metadata.max.age.ms", "5000")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create_with_context(ProducerLog(id))
        .unwrap();
    rt.block_on(async {
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut n = 0u64;
        use futures::StreamExt;
        while !stop.load(Ordering::Acquire) {
            while in_flight.len() >= 200 {
                if let Some((r, v)) = in_flight.next().await {
                    record(outcomes, r, v);
                }
            }
            let value = format!("p{id}-{n:09}");
            let key = format!("k{}", n % 64);
            match producer.send_result(FutureRecord::to(TOPIC).key(&key).payload(&value)) {
                Ok(fut) => {
                    sent.fetch_add(1, Ordering::AcqRel);
                    in_flight.push(async move { (fut.await, value) });
                    n += 1;
                }
                Err((e, _)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let _ = e;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        while let Some((r, v)) = in_flight.next().await {
            record(outcomes, r, v);
        }
    });
}

type Delivery = Result<
    rdkafka::producer::future_producer::OwnedDeliveryResult,
    futures::channel::oneshot::Canceled,
>;

fn record(outcomes: &Mutex<Outcomes>, r: Delivery, value: String) {
    let mut o = outcomes.lock().unwrap();
    match r {
        Ok(Ok(d)) => {
            o.acked.insert(value, (d.partition, d.offset));
        }
        Ok(Err((e, _))) => o.failed.push((value, e.to_string())),
        Err(e) => o.failed.push((value, e.to_string())),
    }
}

/// A consumer group reading along (rebalances and coordinator moves happen under it).
fn consume_until(clients: &Clients, bootstrap: &str, stop: &AtomicBool, consumed: &AtomicU64) {
    let consumer: BaseConsumer = clients
        .config(bootstrap)
        .set("group.id", "chaos-readers")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    while !stop.load(Ordering::Acquire) {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(200)) {
            consumed.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Every record in every partition, from the start to the high watermark.
fn read_everything(clients: &Clients, bootstrap: &str) -> Vec<(i32, i64, String)> {
    let consumer: BaseConsumer = clients
        .config(bootstrap)
        .set("group.id", "chaos-verifier")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(TOPIC, p, Duration::from_secs(30))
            .unwrap();
        ends.insert(p, high);
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut pos: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while ends
        .iter()
        .any(|(p, e)| pos.get(p).copied().unwrap_or(0) < *e)
    {
        assert!(Instant::now() < deadline, "read {pos:?} of {ends:?}");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
            out.push((m.partition(), m.offset(), v));
            pos.insert(m.partition(), m.offset() + 1);
        }
    }
    out
}

/// When a value was read back twice, prints what a diagnosis needs before `verify` fails:
/// for each replica, the batch holding each copy (leader epoch, producer id and epoch,
/// sequences) and the brokers' log lines about idempotence refusals and truncations of that
/// partition. (An earlier duplicate came from a stale append into a follower's truncated log;
/// these lines tell a client-side epoch bump from a broker-side one.)
fn report_duplicates(root: &std::path::Path, read: &[(i32, i64, String)]) {
    let mut first: HashMap<&str, (i32, i64)> = HashMap::new();
    let mut twice = Vec::new();
    for (p, o, v) in read {
        if let Some(at) = first.insert(v.as_str(), (*p, *o)) {
            twice.push((v.clone(), *p, at.1, *o));
        }
    }
    for (value, partition, a, b) in twice.iter().take(3) {
        println!("duplicate {value} in partition {partition} at offsets {a} and {b}:");
        for node in 0..3 {
            let dir = root
                .join(format!("node-{node}"))
                .join(format!("{TOPIC}-{partition}"));
            for line in batches_around(&dir, &[*a, *b]) {
                println!("  node {node}: {line}");
            }
            let log =
                std::fs::read_to_string(root.join(format!("node-{node}.log"))).unwrap_or_default();
            let needle = format!("{TOPIC}-{partition}");
            let wanted = |l: &&str| {
                (l.contains("idempotence check") && l.contains(&needle))
                    || (l.contains("truncating a divergent")
                        && l.contains(TOPIC)
                        && l.contains(&format!("partition={partition}")))
            };
            for line in log.lines().filter(wanted).take(20) {
                println!("  node {node} log: {line}");
            }
        }
    }
}

/// The headers of the batches in `dir`'s segments that hold one of `offsets`.
fn batches_around(dir: &std::path::Path, offsets: &[i64]) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|f| f.extension().is_some_and(|x| x == "log"));
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let data = std::fs::read(&f).unwrap_or_default();
        let mut pos = 0usize;
        while pos + 61 <= data.len() {
            let i64_at = |at: usize| i64::from_be_bytes(data[at..at + 8].try_into().unwrap());
            let i32_at = |at: usize| i32::from_be_bytes(data[at..at + 4].try_into().unwrap());
            let base = i64_at(pos);
            let len = i32_at(pos + 8).max(0) as usize;
            let last = base + i64::from(i32_at(pos + 23));
            if offsets.iter().any(|o| (base..=last).contains(o)) {
                let epoch = i16::from_be_bytes(data[pos + 51..pos + 53].try_into().unwrap());
                let seq = i32_at(pos + 53);
                out.push(format!(
                    "batch {base}..{last} leader_epoch={} producer={} producer_epoch={epoch} seq={seq}..{}",
                    i32_at(pos + 12),
                    i64_at(pos + 43),
                    seq + (last - base) as i32
                ));
            }
            pos += 12 + len;
        }
    }
    out
}

fn verify(outcomes: &Outcomes, read: &[(i32, i64, String)]) {
    // Offsets are contiguous per partition: nothing is missing in the middle.
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o, _) in read {
        by_partition.entry(*p).or_default().push(*o);
    }
    for (p, offsets) in &by_partition {
        for w in offsets.windows(2) {
            assert_eq!(w[1], w[0] + 1, "gap in partition {p} after offset {}", w[0]);
        }
        assert_eq!(offsets[0], 0, "partition {p} starts at 0");
    }
    // Exactly once: no value twice.
    let mut where_read: HashMap<&str, (i32, i64)> = HashMap::new();
    for (p, o, v) in read {
        if let Some(first) = where_read.insert(v.as_str(), (*p, *o)) {
            panic!("{v} stored twice: at {first:?} and {p}/{o}");
        }
    }
    // Every acknowledged record is where the broker said it put it. A retry the broker
    // recognised as an older duplicate is acknowledged without an offset (librdkafka reports
    // -1001, "unknown", for DUPLICATE_SEQUENCE_NUMBER): such a record must be there, in its
    // partition, wherever it was first written.
    let mut lost = Vec::new();
    let mut offset_unknown = 0;
    for (v, at) in &outcomes.acked {
        let found = where_read.get(v.as_str()).copied();
        let ok = match found {
            Some(f) if at.1 < 0 => f.0 == at.0,
            Some(f) => f == *at,
            None => false,
        };
        if at.1 < 0 {
            offset_unknown += 1;
        }
        if !ok {
            lost.push((v.clone(), *at, found));
        }
    }
    println!("acknowledged without an offset (duplicate retries): {offset_unknown}");
    lost.sort();
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost or moved, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    // In order per producer within each partition (idempotence keeps retries in order).
    let mut last: HashMap<(i32, &str), &str> = HashMap::new();
    for (p, _, v) in read {
        let producer = v.split('-').next().unwrap_or("");
        if let Some(prev) = last.insert((*p, producer), v.as_str()) {
            assert!(
                prev < v.as_str(),
                "partition {p}: {v} after {prev} from the same producer"
            );
        }
    }
}

/// Every listener is secured: clients and the brokers' replication connections use SASL_SSL
/// (TLS with a test CA; SCRAM-SHA-512 for the clients, PLAIN for the brokers), and the quorum
/// listener (fjord-quorum's Raft RPC, heartbeats, forwarded writes) uses mutual TLS.
fn sasl_ssl_everywhere(dir: &std::path::Path) -> (Vec<(String, String)>, Clients) {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
    let authority = security_support::ca("fjord-chaos-ca");
    // One certificate per cluster, valid as server and client: brokers present it on their
    // listeners and to each other on the quorum's mutual TLS.
    let sans = ["localhost", "127.0.0.1", "127.0.0.2", "127.0.0.3"].map(String::from);
    let mut params = CertificateParams::new(sans.to_vec()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "fjord-broker");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key_pair = KeyPair::generate().unwrap();
    let issuer = Issuer::from_params(&authority.params, &authority.key);
    let cert = params.signed_by(&key_pair, &issuer).unwrap().pem();
    let key = key_pair.serialize_pem();
    let ca_path = dir.join("ca.pem");
    let keystore = dir.join("broker.pem");
    std::fs::write(&ca_path, &authority.pem).unwrap();
    std::fs::write(&keystore, format!("{cert}{key}")).unwrap();
    let ca_str = ca_path.display().to_string();
    let broker: Vec<(String, String)> = [
        ("fjord.test.listener", "SECURE".to_string()),
        ("listener.security.protocol.map", "SECURE:SASL_SSL,CONTROLLER:SSL".into()),
        ("listener.name.controller.ssl.client.auth", "required".into()),
        ("sasl.enabled.mechanisms", "SCRAM-SHA-512,PLAIN".into()),
        ("sasl.plain.users", "broker:broker-secret".into()),
        ("sasl.mechanism.inter.broker.protocol", "PLAIN".into()),
        (
            "listener.name.secure.plain.sasl.jaas.config",
            "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"broker\" password=\"broker-secret\";".into(),
        ),
        ("ssl.keystore.type", "PEM".into()),
        ("ssl.keystore.location", keystore.display().to_string()),
        ("ssl.truststore.location", ca_str.clone()),
        ("connection.failed.authentication.delay.ms", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let clients = Clients {
        props: [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "chaos"),
            ("sasl.password", "chaos-secret"),
            ("ssl.ca.location", ca_str.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        security: fjord_client::ClientSecurity::sasl_ssl(
            fjord_client::TlsSettings::with_ca_file(&ca_path),
            fjord_client::SaslSettings::new(
                fjord_client::SaslMechanism::Plain,
                "broker",
                "broker-secret",
            ),
        ),
    };
    (broker, clients)
}

/// The quorum listener completes a TLS handshake for a client with the cluster's certificate
/// and refuses one without a certificate.
fn assert_quorum_speaks_mutual_tls(cluster: &ProcCluster, dir: &std::path::Path) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let node = &cluster.nodes[0];
    let addr = format!("{}:{}", node.host, node.controller_port);
    let attempt = |with_cert: bool| {
        let settings = fjord_client::TlsSettings {
            ca: Some(fjord_client::PemSource::File(dir.join("ca.pem"))),
            client_cert: with_cert.then(|| fjord_client::ClientCertificate {
                cert_chain: fjord_client::PemSource::File(dir.join("broker.pem")),
                key: fjord_client::PemSource::File(dir.join("broker.pem")),
            }),
            server_name: None,
            verify_hostname: true,
        };
        let config = fjord_client::rustls_client_config(&settings).unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(&addr).await.ok()?;
            let name = rustls::pki_types::ServerName::try_from(node.host.clone()).ok()?;
            let mut tls = connector.connect(name, tcp).await.ok()?;
            // A request the server must answer: an application message with no handler
            // match still gets a framed response once the peer is trusted.
            let body = br#"{"Message":{"nope":1}}"#;
            let mut frame = (body.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(body);
            tls.write_all(&frame).await.ok()?;
            let mut len = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut len))
                .await
                .ok()?
                .ok()?;
            Some(())
        })
    };
    assert!(
        attempt(true).is_some(),
        "a quorum member's certificate is accepted"
    );
    assert!(
        attempt(false).is_none(),
        "a peer without a certificate is refused"
    );
}

/// The clients' SCRAM-SHA-512 user, created over SASL_SSL with the brokers' PLAIN identity.
fn create_scram_user(cluster: &ProcCluster, clients: &Clients) {
    use fjord_broker::auth::scram::ScramMechanism;
    use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
    use kafka_protocol::messages::AlterUserScramCredentialsRequest;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = fjord_client::Connection::connect_with(cluster.addr(0), &clients.security)
            .await
            .expect("the admin logs in over SASL_SSL");
        let salt = b"chaos-salt".to_vec();
        let m = ScramMechanism::Sha512;
        let up = ScramCredentialUpsertion::default()
            .with_name(security_support::s("chaos"))
            .with_mechanism(m.code())
            .with_iterations(4096)
            .with_salt(bytes::Bytes::from(salt.clone()))
            .with_salted_password(bytes::Bytes::from(m.salted_password(
                b"chaos-secret",
                &salt,
                4096,
            )));
        let r = c
            .send(
                &AlterUserScramCredentialsRequest::default().with_upsertions(vec![up]),
                0,
            )
            .await
            .unwrap();
        assert!(r.results.iter().all(|x| x.error_code == 0), "{r:?}");
    });
}

#[test]
fn no_acknowledged_record_is_lost_while_brokers_are_sigkilled() {
    run(Chaos::Kill, false);
}

#[test]
fn no_send_fails_while_brokers_are_stopped_with_sigterm() {
    run(Chaos::Terminate, false);
}

#[test]
fn no_acknowledged_record_is_lost_with_every_listener_secured() {
    run(Chaos::Kill, true);
}
