//! librdkafka (the `rdkafka` crate, vendored build) against an in-process broker: 100k keyed
//! records per compression codec, a 3-member consumer group that rebalances when a member leaves,
//! offsets committed on revoke, a broker restart, and a resumed group that continues exactly at
//! the committed offsets: no loss, no duplicates.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

#[global_allocator]
static ALLOCATOR: fjord_broker::alloc_guard::GuardedAlloc = fjord_broker::alloc_guard::GuardedAlloc;

const TOPIC: &str = "rdkafka-compat";
const PARTITIONS: i32 = 6;
const PER_CODEC: usize = 100_000;
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

fn start(dir: &std::path::Path, port: u16) -> (tokio::runtime::Runtime, SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let overrides = vec![
        (
            "listeners".to_string(),
            format!("PLAINTEXT://127.0.0.1:{port}"),
        ),
        ("admin.listener".to_string(), "127.0.0.1:0".to_string()),
        ("log.dirs".to_string(), dir.display().to_string()),
        (
            "group.initial.rebalance.delay.ms".to_string(),
            "500".to_string(),
        ),
    ];
    let (config, _) = fjord_broker::Config::load(None, &overrides).unwrap();
    let running = rt.block_on(fjord_broker::start(config)).unwrap();
    let addr = running.kafka_addrs[0];
    (rt, addr)
}

#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
}

struct CountingContext(Arc<Deliveries>);
impl ClientContext for CountingContext {}
impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        match result {
            Ok(_) => self.0.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn produce_all(bootstrap: &str) -> HashSet<String> {
    let mut expected = HashSet::new();
    for codec in CODECS {
        let deliveries = Arc::new(Deliveries::default());
        let producer: BaseProducer<CountingContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("compression.type", codec)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create_with_context(CountingContext(deliveries.clone()))
            .unwrap();
        for i in 0..PER_CODEC {
            let key = format!("key-{}", i % 1000);
            let value = format!("{codec}-{i}");
            let mut record = BaseRecord::to(TOPIC).key(&key).payload(&value);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => panic!("send failed: {e}"),
                }
            }
            expected.insert(value);
        }
        producer.flush(Duration::from_secs(60)).unwrap();
        assert_eq!(
            deliveries.failed.load(Ordering::Relaxed),
            0,
            "{codec}: failed deliveries"
        );
        assert_eq!(
            deliveries.ok.load(Ordering::Relaxed),
            PER_CODEC as u64,
            "{codec}: acknowledged records"
        );
    }
    expected
}

/// Commits the consumed position synchronously before partitions are taken away, so the next
/// owner starts exactly after what this member saw.
/// Also counts assignments, so the test can tell that a rebalance really happened.
#[derive(Default)]
struct CommitOnRevoke {
    assignments: AtomicU64,
}
impl ClientContext for CommitOnRevoke {}
impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            let _ = consumer.commit_consumer_state(CommitMode::Sync);
        }
    }
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.assignments.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn consumer(bootstrap: &str, group: &str) -> BaseConsumer<CommitOnRevoke> {
    let c: BaseConsumer<CommitOnRevoke> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        // Offsets are stored only for records the test has recorded; otherwise librdkafka stores
        // (and then commits) records it hands out while closing, which the test never saw.
        .set("enable.auto.offset.store", "false")
        .create_with_context(CommitOnRevoke::default())
        .unwrap();
    c.subscribe(&[TOPIC]).unwrap();
    c
}

type Seen = Arc<Mutex<HashMap<(i32, i64), (String, u32)>>>;

/// Runs consumers in threads. A member with a quota leaves after that many records; the others
/// stop once the group has seen `stop_at` distinct records, but not before they have been through
/// a rebalance caused by a leaver and consumed 1000 records after it.
fn consume_phase(
    bootstrap: &str,
    group: &str,
    quotas: Vec<Option<usize>>,
    stop_at: usize,
    seen: Seen,
) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let expect_rebalance = quotas.iter().any(|q| q.is_some());
    let threads: Vec<_> = quotas
        .into_iter()
        .map(|quota| {
            let seen = seen.clone();
            let bootstrap = bootstrap.to_string();
            let group = group.to_string();
            std::thread::spawn(move || {
                let c = consumer(&bootstrap, &group);
                let mut mine = 0usize;
                let mut mine_at_reassign: Option<usize> = None;
                loop {
                    assert!(Instant::now() < deadline, "consumer phase timed out");
                    let assignments = c.context().assignments.load(Ordering::SeqCst);
                    if quota.is_none()
                        && expect_rebalance
                        && assignments >= 2
                        && mine_at_reassign.is_none()
                    {
                        mine_at_reassign = Some(mine);
                    }
                    let rebalanced =
                        !expect_rebalance || mine_at_reassign.is_some_and(|m| mine >= m + 1000);
                    let done = match quota {
                        Some(q) => mine >= q,
                        None => rebalanced && seen.lock().unwrap().len() >= stop_at,
                    };
                    if done {
                        break;
                    }
                    let Some(msg) = c.poll(Duration::from_millis(200)) else {
                        continue;
                    };
                    let msg = msg.expect("consumer error");
                    let value = String::from_utf8(msg.payload().unwrap().to_vec()).unwrap();
                    {
                        let mut s = seen.lock().unwrap();
                        let e = s
                            .entry((msg.partition(), msg.offset()))
                            .or_insert((value.clone(), 0));
                        assert_eq!(e.0, value, "same offset returned different data");
                        e.1 += 1;
                    }
                    c.store_offset_from_message(&msg).unwrap();
                    mine += 1;
                }
                match c.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(e) => panic!("commit failed: {e}"),
                }
                drop(c);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn committed(bootstrap: &str, group: &str) -> HashMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(TOPIC, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

#[test]
fn produce_consume_rebalance_restart_resume() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("FJORD_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let (rt, addr) = start(dir.path(), 0);
    let bootstrap = addr.to_string();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let created = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");

    let expected = produce_all(&bootstrap);
    let total = expected.len();
    assert_eq!(total, PER_CODEC * CODECS.len());

    // Phase A: three members; the third leaves after 30k records, forcing a rebalance.
    let group = "rdkafka-group";
    let seen_a: Seen = Arc::default();
    consume_phase(
        &bootstrap,
        group,
        vec![None, None, Some(30_000)],
        total / 2,
        seen_a.clone(),
    );
    let seen_a = std::mem::take(&mut *seen_a.lock().unwrap());
    let dups: Vec<_> = seen_a.iter().filter(|(_, (_, n))| *n > 1).collect();
    assert!(
        dups.is_empty(),
        "phase A delivered {} records more than once",
        dups.len()
    );
    let commits = committed(&bootstrap, group);
    let committed_total: i64 = commits.values().sum();
    println!(
        "phase A: {} records, committed {committed_total}",
        seen_a.len()
    );
    assert_eq!(
        committed_total as usize,
        seen_a.len(),
        "every consumed record is committed, nothing more"
    );

    // Restart the broker on the same port with the same data.
    rt.shutdown_timeout(Duration::from_secs(5));
    let (rt2, addr2) = start(dir.path(), addr.port());
    assert_eq!(addr2, addr);
    assert_eq!(
        committed(&bootstrap, group),
        commits,
        "committed offsets survive the restart"
    );

    // Phase C: a new group generation resumes exactly at the committed offsets.
    let seen_c: Seen = Arc::default();
    consume_phase(
        &bootstrap,
        group,
        vec![None, None, None],
        total - seen_a.len(),
        seen_c.clone(),
    );
    let seen_c = std::mem::take(&mut *seen_c.lock().unwrap());
    for (p, o) in seen_c.keys() {
        assert!(
            *o >= commits.get(p).copied().unwrap_or(0),
            "partition {p} offset {o} re-delivered below the commit"
        );
    }
    assert!(
        seen_c.values().all(|(_, n)| *n == 1),
        "phase C delivered duplicates"
    );
    let all: HashSet<String> = seen_a
        .values()
        .chain(seen_c.values())
        .map(|(v, _)| v.clone())
        .collect();
    assert_eq!(
        seen_a.len() + seen_c.len(),
        total,
        "no record consumed twice across the restart"
    );
    assert_eq!(all, expected, "every produced record consumed");
    drop(rt2);
}
