//! Shutdown under load: producers (`acks=all`) and a consumer group connected, plus idle and
//! long-polling connections, and the broker must stop every task it started within 10 s —
//! in process (where the task count can be read) and as a real process on SIGTERM in a
//! three-node cluster (controlled shutdown first, then the same task shutdown).

#[path = "common/procs.rs"]
mod procs;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const BOUND: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn create_topic(rt: &tokio::runtime::Runtime, bootstrap: &str, topic: &str, rf: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let results = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, 3, TopicReplication::Fixed(rf))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

/// Producers and a consumer running until `stop`; counts what each side saw.
struct Load {
    stop: Arc<AtomicBool>,
    consumed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(bootstrap: &str, topic: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let consumed = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for p in 0..2 {
            let (stop, bootstrap, topic) = (stop.clone(), bootstrap.to_string(), topic.to_string());
            threads.push(std::thread::spawn(move || {
                let producer: BaseProducer = ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .set("acks", "all")
                    .set("linger.ms", "2")
                    .set("message.timeout.ms", "5000")
                    .create()
                    .unwrap();
                let value = vec![b'x'; 512];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("p{p}-{n}");
                    let _ = producer.send(BaseRecord::to(&topic).key(&key).payload(&value));
                    n += 1;
                    producer.poll(Duration::ZERO);
                    if n.is_multiple_of(500) {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                // Outstanding messages fail against a stopped broker; that is expected here.
                let _ = producer.flush(Duration::from_millis(100));
            }));
        }
        let (s, c, bootstrap, topic) = (
            stop.clone(),
            consumed.clone(),
            bootstrap.to_string(),
            topic.to_string(),
        );
        threads.push(std::thread::spawn(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", "shutdown-load")
                .set("auto.offset.reset", "earliest")
                .set("fetch.wait.max.ms", "500")
                .create()
                .unwrap();
            consumer.subscribe(&[&topic]).unwrap();
            while !s.load(Ordering::Relaxed) {
                if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        Load {
            stop,
            consumed,
            threads,
        }
    }

    fn wait_consumed(&self, at_least: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.consumed.load(Ordering::Relaxed) < at_least {
            assert!(
                Instant::now() < deadline,
                "load never got going: {} consumed",
                self.consumed.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

/// A Fetch that long-polls (max wait 30 s, 1 GiB min bytes) at offset 0 of an empty topic:
/// it is in flight when shutdown starts and must not hold it up past the bound.
fn long_poll(addr: SocketAddr, topic: &str) -> TcpStream {
    use bytes::BytesMut;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{ApiKey, FetchRequest, RequestHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let request = FetchRequest::default()
        .with_max_wait_ms(30_000)
        .with_min_bytes(1 << 30)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)])]);
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Fetch as i16)
        .with_request_api_version(4)
        .with_correlation_id(1)
        .encode(&mut buf, ApiKey::Fetch.request_header_version(4))
        .unwrap();
    request.encode(&mut buf, 4).unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&(buf.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&buf).unwrap();
    s
}

#[test]
fn shutdown_under_load_ends_every_task_within_the_bound() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let overrides = vec![
        ("listeners".into(), "PLAINTEXT://127.0.0.1:0".into()),
        ("admin.listener".into(), "127.0.0.1:0".into()),
        ("log.dirs".into(), dir.path().display().to_string()),
        ("group.initial.rebalance.delay.ms".into(), "0".into()),
    ];
    let (config, _) = fjord_broker::Config::load(None, &overrides).unwrap();
    let running = rt.block_on(fjord_broker::start(config)).unwrap();
    let addr = running.kafka_addrs[0];
    let bootstrap = addr.to_string();
    create_topic(&rt, &bootstrap, "under-load", 1);
    create_topic(&rt, &bootstrap, "stays-empty", 1);
    let load = Load::start(&bootstrap, "under-load");
    load.wait_consumed(2_000);
    let idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut polling = long_poll(addr, "stays-empty");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        running.broker.tasks.running() > 20,
        "connections are owned tasks"
    );

    let started = Instant::now();
    let abandoned = rt.block_on(running.broker.shutdown());
    let took = started.elapsed();
    assert_eq!(abandoned, 0, "every task ended by itself");
    assert_eq!(running.broker.tasks.running(), 0);
    eprintln!("in-process shutdown took {took:?}");
    assert!(took < BOUND, "shutdown took {took:?}");

    // Connections were closed and the listener is gone.
    polling
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(polling.read(&mut buf), Ok(0) | Err(_)),
        "the long-polling connection was closed without an answer"
    );
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    }
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).and_then(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(&[0, 0, 0, 1, 0])?;
        s.read(&mut buf)
    });
    assert!(
        matches!(refused, Ok(0) | Err(_)),
        "nothing serves after shutdown: {refused:?}"
    );
    load.stop();
}

/// Strips ANSI colour sequences (the log may be coloured) so fields can be matched.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn sigterm_under_load_in_a_cluster_exits_within_the_bound() {
    let dir = procs::test_dir();
    let mut cluster = procs::ProcCluster::start(dir.path(), 3, &[]);
    let rt = runtime();
    create_topic(&rt, &cluster.bootstrap(), "cluster-load", 3);
    let load = Load::start(&cluster.bootstrap(), "cluster-load");
    load.wait_consumed(2_000);
    for i in [2, 1] {
        let (took, status) = cluster.terminate_with_status(i);
        let log =
            plain(&std::fs::read_to_string(dir.path().join(format!("node-{i}.log"))).unwrap());
        eprintln!("node {i} stopped in {took:?}: {status:?}");
        assert!(took < BOUND, "node {i} took {took:?} to stop; log:\n{log}");
        assert!(
            log.contains("abandoned_tasks=0"),
            "node {i} ended every task; log:\n{log}"
        );
    }
    load.stop();
}
