//! Transactions survive the death of their coordinator: a librdkafka transactional producer
//! commits (and every fifth time aborts) transactions of 12 records over 3 partitions of an
//! RF 3, `min.insync.replicas=2` topic in a 3-broker cluster, while a chaos loop SIGKILLs the
//! broker that coordinates its transactional id (asked with FindCoordinator each time), waits,
//! and restarts it.
//!
//! Afterwards every partition's last stable offset reaches its high watermark (no transaction
//! is left hanging), and a `read_committed` read of the whole topic holds:
//! - every record of every transaction whose commit the client saw succeed, exactly once;
//! - no record of a transaction the client aborted;
//! - for a transaction whose outcome the client could not learn (the producer failed fatally
//!   mid-commit), all of its records or none: never part of one (committed in one partition,
//!   aborted in another);
//! - no record twice.
//!
//! The counts go to the test output.

#[path = "common/procs.rs"]
mod procs;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fjord_client::Connection;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use procs::{wait_for, ProcCluster};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// Polls its delivery reports on its own thread, as abort and commit need.
type TxnProducer = ThreadedProducer<DefaultProducerContext>;
use rdkafka::{Message, Offset, TopicPartitionList};

const TOPIC: &str = "txn-chaos";
const PARTITIONS: i32 = 3;
const RECORDS_PER_TXN: usize = 12;
const TXN_ID: &str = "chaos-transactions";
const CHAOS_FOR: Duration = Duration::from_secs(75);

/// What the producer learnt of each transaction, by number.
#[derive(Default, Debug)]
struct Outcomes {
    committed: BTreeSet<u64>,
    aborted: BTreeSet<u64>,
    unknown: BTreeSet<u64>,
}

fn producer(bootstrap: &str) -> TxnProducer {
    let p: TxnProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", TXN_ID)
        .set("transaction.timeout.ms", "60000")
        .set("linger.ms", "2")
        .create()
        .expect("producer");
    // A coordinator may be down: keep asking (a fresh instance fences the previous one).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match p.init_transactions(Duration::from_secs(30)) {
            Ok(()) => return p,
            Err(e) if Instant::now() < deadline => {
                println!("init_transactions: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("init_transactions kept failing: {e}"),
        }
    }
}

/// Runs one transaction; the outcome as far as the client knows.
fn one_transaction(p: &TxnProducer, n: u64, abort: bool) -> Result<bool, KafkaError> {
    p.begin_transaction()?;
    for i in 0..RECORDS_PER_TXN {
        let value = format!("t{n}-r{i}");
        let key = format!("{i}");
        let mut record = BaseRecord::to(TOPIC).key(&key).payload(&value);
        loop {
            match p.send(record) {
                Ok(()) => break,
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    std::thread::sleep(Duration::from_millis(20));
                    record = r;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
    if abort {
        p.abort_transaction(Duration::from_secs(60))?;
        return Ok(false);
    }
    // A retriable commit error may be retried: the outcome stays "commit".
    let mut attempts = 0;
    loop {
        match p.commit_transaction(Duration::from_secs(60)) {
            Ok(()) => return Ok(true),
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempts < 5 => {
                attempts += 1;
                println!("transaction {n}: retrying commit after {e}");
            }
            Err(e) => return Err(e),
        }
    }
}

fn produce_until(bootstrap: &str, stop: &AtomicBool, outcomes: &Mutex<Outcomes>) {
    let mut p = producer(bootstrap);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let abort = n.is_multiple_of(5);
        match one_transaction(&p, n, abort) {
            Ok(true) => {
                outcomes.lock().unwrap().committed.insert(n);
            }
            Ok(false) => {
                outcomes.lock().unwrap().aborted.insert(n);
            }
            Err(KafkaError::Transaction(e)) if e.txn_requires_abort() => {
                println!("transaction {n}: {e}; aborting");
                match p.abort_transaction(Duration::from_secs(60)) {
                    Ok(()) => {
                        outcomes.lock().unwrap().aborted.insert(n);
                    }
                    Err(e) => {
                        println!("transaction {n}: abort failed: {e}; new producer");
                        outcomes.lock().unwrap().unknown.insert(n);
                        p = producer(bootstrap);
                    }
                }
            }
            Err(e) => {
                println!("transaction {n}: {e}; new producer");
                outcomes.lock().unwrap().unknown.insert(n);
                p = producer(bootstrap);
            }
        }
    }
}

/// The node that coordinates the transactional id, asked of any live broker.
fn coordinator(rt: &tokio::runtime::Runtime, cluster: &ProcCluster) -> Option<i32> {
    for i in 0..3 {
        if !cluster.is_running(i) {
            continue;
        }
        let found = rt.block_on(async {
            let mut c = Connection::connect(cluster.addr(i)).await.ok()?;
            let req = FindCoordinatorRequest::default()
                .with_key(StrBytes::from_static_str(TXN_ID))
                .with_key_type(1);
            let r = c.send(&req, 3).await.ok()?;
            (r.error_code == 0).then_some(r.node_id.0)
        });
        if found.is_some() {
            return found;
        }
    }
    None
}

/// (read_uncommitted end, read_committed end) of a partition, from the live brokers.
fn ends(rt: &tokio::runtime::Runtime, cluster: &ProcCluster, partition: i32) -> Option<(i64, i64)> {
    let ask = |isolation: i8| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(-1)])])
    };
    for i in 0..3 {
        let got = rt.block_on(async {
            let mut c = Connection::connect(cluster.addr(i)).await.ok()?;
            let mut out = Vec::new();
            for isolation in [0, 1] {
                let r = c.send(&ask(isolation), 7).await.ok()?;
                let p = &r.topics[0].partitions[0];
                if p.error_code != 0 {
                    return None;
                }
                out.push(p.offset);
            }
            Some((out[0], out[1]))
        });
        if got.is_some() {
            return got;
        }
    }
    None
}

fn read_committed(bootstrap: &str) -> Vec<(i32, i64, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "txn-chaos-verifier")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut at_end = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while at_end.len() < PARTITIONS as usize {
        assert!(
            Instant::now() < deadline,
            "read_committed never reached the end"
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("read failed: {e}"),
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
                out.push((m.partition(), m.offset(), v));
            }
        }
    }
    out
}

#[test]
fn transactions_stay_atomic_while_their_coordinator_is_killed() {
    let dir = procs::test_dir();
    let mut cluster = ProcCluster::start(
        dir.path(),
        3,
        &[("controlled.shutdown.timeout.ms", "15000")],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bootstrap = cluster.bootstrap();
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &bootstrap);
    procs::create_replicated_topic(&rt, client, TOPIC, PARTITIONS);

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let producing = {
        let (stop, outcomes, bootstrap) = (stop.clone(), outcomes.clone(), bootstrap.clone());
        std::thread::spawn(move || produce_until(&bootstrap, &stop, &outcomes))
    };

    let started = Instant::now();
    let mut kills = 0;
    std::thread::sleep(Duration::from_secs(5));
    while started.elapsed() < CHAOS_FOR {
        let Some(node) = coordinator(&rt, &cluster) else {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        };
        let committed_before = outcomes.lock().unwrap().committed.len();
        println!("killing broker {node}, the coordinator ({committed_before} commits so far)");
        cluster.kill(node as usize);
        kills += 1;
        std::thread::sleep(Duration::from_secs(4));
        cluster.spawn(node as usize);
        cluster.wait_ready(node as usize);
        std::thread::sleep(Duration::from_secs(6));
    }
    stop.store(true, Ordering::Relaxed);
    producing.join().expect("producer thread");

    // No transaction is left open: the last stable offsets catch up with the high watermarks.
    for p in 0..PARTITIONS {
        wait_for(&format!("partition {p} stable"), 60, || {
            ends(&rt, &cluster, p).is_some_and(|(hw, lso)| hw == lso)
        });
    }
    let read = read_committed(&bootstrap);
    let outcomes = outcomes.lock().unwrap();
    println!(
        "{kills} coordinator kills; transactions: {} committed, {} aborted, {} unknown; {} records read",
        outcomes.committed.len(),
        outcomes.aborted.len(),
        outcomes.unknown.len(),
        read.len()
    );
    assert!(kills >= 3, "only {kills} kills");
    assert!(
        outcomes.committed.len() >= 20,
        "too few commits to mean anything: {outcomes:?}"
    );

    let mut seen: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
    let mut values = BTreeSet::new();
    for (_, _, v) in &read {
        assert!(values.insert(v.clone()), "{v} read twice");
        let (t, r) = v
            .strip_prefix('t')
            .and_then(|rest| rest.split_once("-r"))
            .unwrap_or_else(|| panic!("unexpected value {v}"));
        seen.entry(t.parse().unwrap())
            .or_default()
            .insert(r.parse().unwrap());
    }
    for n in &outcomes.committed {
        let got = seen.get(n).map_or(0, |s| s.len());
        assert_eq!(
            got, RECORDS_PER_TXN,
            "committed transaction {n}: {got} records visible"
        );
    }
    for n in &outcomes.aborted {
        assert!(!seen.contains_key(n), "aborted transaction {n} is visible");
    }
    for (n, records) in &seen {
        assert!(
            outcomes.committed.contains(n) || outcomes.unknown.contains(n),
            "transaction {n} is visible but was never committed"
        );
        assert_eq!(
            records.len(),
            RECORDS_PER_TXN,
            "transaction {n} is visible in part: {records:?}"
        );
    }
}
