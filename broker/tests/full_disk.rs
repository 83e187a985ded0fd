//! A real full disk (issue 13): the broker's log dir is a 24 MiB tmpfs, mounted in a private
//! mount namespace (`unshare`) so the host's mount table is untouched. An `acks=all` producer
//! (librdkafka) fills it. Asserted: producers get KAFKA_STORAGE_ERROR, `/v1/ready` answers 503
//! naming the log dir and the error (and keeps doing so while the disk stays full), the error is
//! logged once; after space is freed the broker is ready again and takes writes, and after a
//! crash-restart every acknowledged record is there at the offset it was acknowledged with,
//! offsets contiguous, nothing that failed visible. A second test fills the disk without
//! producing and asks for a topic: the metadata log write fails, `/v1/ready` must say that
//! the quorum member stopped, and `/v1/restart-safety` must not call a restart safe.
//!
//! The tmpfs lives as long as the mount namespace, i.e. as long as the `sh` that `unshare` runs.
//! That shell therefore runs the broker as its child and starts it again when the test asks for
//! a restart (by creating a `restart` file before killing it); any other exit ends the shell.
//! The test reaches into the tmpfs through `/proc/<shell pid>/root/...`.
//!
//! Needs root (mounting tmpfs); it fails rather than skips without it.

#[path = "common/procs.rs"]
mod procs;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const TOPIC: &str = "full-disk";
const TMPFS_SIZE: &str = "24m";
/// Occupies part of the tmpfs from the start; deleting it is how the test frees space.
const BALLAST_MIB: u64 = 4;
const VALUE_LEN: usize = 4096;
/// The error line the broker logs when writes start failing (once, not per request).
const FAILURE_LOG_LINE: &str = "log dir write failed:";

/// Runs the broker under `unshare` with its log dir on a private tmpfs; see the module docs.
const SHELL: &str = r#"
set -eu
root=$1; broker=$2; shift 2
mount -t tmpfs -o size=$TMPFS_SIZE fjord-full-disk "$root/data"
dd if=/dev/zero of="$root/data/ballast" bs=1M count=$BALLAST_MIB status=none
while :; do
    "$broker" "$@" >>"$root/broker.log" 2>&1 &
    echo $! >"$root/broker.pid"
    rc=0
    wait $! || rc=$?
    echo "$rc" >>"$root/exits"
    [ -e "$root/restart" ] || exit "$rc"
    rm "$root/restart"
done
"#;

/// The broker to run: `FJORD_BROKER_BIN` when set, else this crate's binary. Worktrees that
/// share one cargo target dir overwrite each other's `target/debug/fjord-broker`, so a run that
/// must test a particular build copies it aside and names the copy here.
fn broker_binary() -> PathBuf {
    std::env::var_os("FJORD_BROKER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_fjord-broker")))
}

struct Node {
    root: PathBuf,
    shell: Child,
    kafka_port: u16,
    admin_port: u16,
}

impl Node {
    fn start(root: &Path) -> Node {
        // SAFETY: geteuid has no preconditions and touches no memory.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "full_disk mounts a tmpfs in a private mount namespace and must run as root"
        );
        std::fs::create_dir_all(root.join("data")).unwrap();
        let kafka_port = procs::free_port("127.0.0.1");
        let admin_port = procs::free_port("127.0.0.1");
        let overrides = [
            format!("listeners=PLAINTEXT://127.0.0.1:{kafka_port}"),
            format!("admin.listener=127.0.0.1:{admin_port}"),
            format!("log.dirs={}", root.join("data").display()),
            "cluster.id=RnVsbERpc2tUZXN0MDAwMQ".to_string(),
        ];
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", SHELL])
            .arg("fjord-full-disk")
            .arg(root)
            .arg(broker_binary());
        for o in &overrides {
            cmd.arg("--override").arg(o);
        }
        let shell = cmd
            .env("TMPFS_SIZE", TMPFS_SIZE)
            .env("BALLAST_MIB", BALLAST_MIB.to_string())
            .env("FJORD_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare starts (util-linux)");
        let node = Node {
            root: root.to_path_buf(),
            shell,
            kafka_port,
            admin_port,
        };
        node.wait_ready("first start");
        node
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    /// The log dir as the broker sees it (inside its mount namespace).
    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The same directory seen from this process: through the shell's mount namespace.
    fn data_dir_from_outside(&self) -> PathBuf {
        let inner = self.data_dir();
        let relative = inner.strip_prefix("/").expect("an absolute test dir");
        PathBuf::from(format!("/proc/{}/root", self.shell.id())).join(relative)
    }

    fn broker_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.root.join("broker.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn broker_log(&self) -> String {
        std::fs::read_to_string(self.root.join("broker.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.broker_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Fails the test with the broker's log when the shell (and so the namespace) has ended.
    fn assert_alive(&mut self, when: &str) {
        if let Some(status) = self.shell.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut e) = self.shell.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut stderr);
            }
            panic!(
                "{when}: the broker's shell exited ({status}); exits: {:?}\nshell stderr: \
                 {stderr}\nbroker log:\n{}",
                std::fs::read_to_string(self.root.join("exits")).unwrap_or_default(),
                self.log_tail()
            );
        }
    }

    fn ready(&self) -> Option<(u16, String)> {
        self.admin_get("/v1/ready")
    }

    fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let status = out.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, out.split_once("\r\n\r\n")?.1.to_string()))
    }

    fn wait_ready(&self, when: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.ready().map(|(s, _)| s) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "{when}: not ready in 30 s (last answer {:?}); log:\n{}",
                self.ready(),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs the broker; the shell starts it again in the same namespace (same tmpfs).
    fn crash_and_restart(&mut self) {
        let old = self.broker_pid().expect("a broker pid");
        std::fs::write(self.root.join("restart"), b"").unwrap();
        // SAFETY: sends a signal to the broker process this test started; no memory involved.
        assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0, "kill {old}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.broker_pid() == Some(old) || self.root.join("restart").exists() {
            self.assert_alive("restart");
            assert!(Instant::now() < deadline, "the broker was not restarted");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_ready("after the restart");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.root.join("restart"));
        if let Some(pid) = self.broker_pid() {
            // SAFETY: signals the broker this test started. Its shell then exits, which
            // unmounts the tmpfs with the namespace.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.shell.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

/// The fate of each record, by the index the test gave it.
#[derive(Default)]
struct Outcomes {
    acked: Vec<(usize, i64)>,
    failed: Vec<(usize, KafkaError)>,
}

struct Recorder(Arc<Mutex<Outcomes>>);
impl ClientContext for Recorder {}
impl ProducerContext for Recorder {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let mut o = self.0.lock().unwrap();
        match result {
            Ok(m) => o.acked.push((index, m.offset())),
            Err((e, _)) => o.failed.push((index, e.clone())),
        }
    }
}

fn value(index: usize) -> Vec<u8> {
    let mut v = format!("record-{index:08}-").into_bytes();
    v.resize(VALUE_LEN, b'x');
    v
}

struct Producing {
    producer: BaseProducer<Recorder>,
    outcomes: Arc<Mutex<Outcomes>>,
    next: usize,
}

impl Producing {
    fn new(bootstrap: &str) -> Producing {
        let outcomes = Arc::new(Mutex::new(Outcomes::default()));
        // No retries: the first answer for each batch is what the test sees (librdkafka would
        // otherwise retry KAFKA_STORAGE_ERROR until message.timeout.ms).
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .set("message.send.max.retries", "0")
            .set("linger.ms", "2")
            .set("batch.size", "65536")
            .set("message.timeout.ms", "20000")
            .create_with_context(Recorder(outcomes.clone()))
            .unwrap();
        Producing {
            producer,
            outcomes,
            next: 0,
        }
    }

    /// Sends `n` records and waits for all their answers; returns how many failed.
    fn send(&mut self, n: usize) -> usize {
        let failed_before = self.outcomes.lock().unwrap().failed.len();
        for _ in 0..n {
            let v = value(self.next);
            let mut record = BaseRecord::<(), [u8], _>::with_opaque_to(TOPIC, self.next)
                .partition(0)
                .payload(&v[..]);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => panic!("send failed locally: {e}"),
                }
            }
            self.next += 1;
        }
        self.producer.flush(Duration::from_secs(30)).unwrap();
        self.outcomes.lock().unwrap().failed.len() - failed_before
    }
}

fn create_topic(bootstrap: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    // Small segments: filling the disk also rolls segments (and writes their indexes).
    let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1))
        .set("segment.bytes", "1048576")
        .set("min.insync.replicas", "1");
    let created =
        futures::executor::block_on(admin.create_topics(&[topic], &AdminOptions::new())).unwrap();
    assert!(created[0].is_ok(), "{created:?}");
}

/// Every record in the partition, in offset order, from a fresh consumer.
fn consume_all(bootstrap: &str) -> Vec<(i64, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "full-disk-check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(low, 0, "log start offset");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.last().map_or(0, |(o, _)| o + 1) < high {
        assert!(
            Instant::now() < deadline,
            "consumed {} records below the high watermark {high}",
            out.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((m.offset(), m.payload().unwrap_or_default().to_vec())),
            Some(Err(e)) => panic!("consume failed: {e}"),
            None => {}
        }
    }
    out
}

#[test]
fn a_full_disk_answers_kafka_storage_error_and_loses_nothing_acknowledged() {
    let started = Instant::now();
    let dir = procs::test_dir();
    let mut node = Node::start(dir.path());
    create_topic(&node.bootstrap());
    let mut producing = Producing::new(&node.bootstrap());

    // Fill: ~20 MiB free, 4 KiB records in batches of up to 64 KiB, until batches fail.
    let mut sent_mib = 0;
    while producing.send(256) == 0 {
        sent_mib += 1;
        assert!(
            sent_mib < 40,
            "24 MiB of tmpfs took {sent_mib} MiB without failing"
        );
    }
    node.assert_alive("after filling the disk");
    // Single records until one fails too: the disk is then full to its last few KiB, not only
    // too full for a 64 KiB batch, and there were several failed requests to log about.
    let mut tries = 0;
    while producing.send(1) == 0 {
        tries += 1;
        assert!(tries < 100, "single records still fit after 100 tries");
    }

    {
        let o = producing.outcomes.lock().unwrap();
        assert!(o.acked.len() > 1000, "acknowledged only {}", o.acked.len());
        assert!(o.failed.len() >= 2, "failed: {}", o.failed.len());
        for (i, e) in &o.failed {
            assert_eq!(
                e,
                &KafkaError::MessageProduction(RDKafkaErrorCode::KafkaStorageError),
                "record {i} on a full disk"
            );
        }
    }

    let data_dir = node.data_dir().display().to_string();
    for attempt in ["at once", "after a probe interval"] {
        if attempt != "at once" {
            // The broker probes a failed dir at most once a second: this answer comes after a
            // probe, which must not find the still full disk writable.
            std::thread::sleep(Duration::from_millis(1200));
        }
        let (status, body) = node.ready().expect("the admin endpoint answers");
        assert_eq!(status, 503, "ready {attempt} on a full disk: {body}");
        assert!(
            body.contains(&data_dir) && body.contains("No space left on device"),
            "the reason names the log dir and the error ({attempt}): {body}"
        );
    }
    assert_eq!(
        node.broker_log().matches(FAILURE_LOG_LINE).count(),
        1,
        "one error line for the whole episode, not one per failed request; log:\n{}",
        node.log_tail()
    );

    // Free space from outside the namespace; the broker notices without any produce.
    let ballast = node.data_dir_from_outside().join("ballast");
    std::fs::remove_file(&ballast)
        .unwrap_or_else(|e| panic!("removing {}: {e}", ballast.display()));
    node.wait_ready("after freeing space");
    assert_eq!(producing.send(100), 0, "produce after freeing space");
    assert_eq!(node.ready().map(|(s, _)| s), Some(200));
    assert!(
        !node.broker_log().contains("panicked"),
        "the broker panicked; log:\n{}",
        node.log_tail()
    );
    node.assert_alive("before the restart");
    assert!(
        !node.root.join("exits").exists(),
        "the broker exited on its own"
    );

    let (acked, failed) = {
        let o = producing.outcomes.lock().unwrap();
        (o.acked.clone(), o.failed.len())
    };
    drop(producing);
    node.crash_and_restart();

    // The log holds exactly the acknowledged records: at their acknowledged offsets,
    // contiguous from 0, and nothing that failed in between.
    let consumed = consume_all(&node.bootstrap());
    for (i, (offset, _)) in consumed.iter().enumerate() {
        assert_eq!(*offset, i as i64, "offsets are contiguous");
    }
    let mut expected: Vec<(i64, Vec<u8>)> = acked.iter().map(|(i, o)| (*o, value(*i))).collect();
    expected.sort();
    assert_eq!(
        consumed.len(),
        expected.len(),
        "records in the log vs acknowledged ({failed} failed)"
    );
    for (got, want) in consumed.iter().zip(&expected) {
        assert!(
            got == want,
            "offset {}: found {:?}, acknowledged {:?} there",
            want.0,
            String::from_utf8_lossy(&got.1[..16]),
            String::from_utf8_lossy(&want.1[..16]),
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the scenario took {:?}",
        started.elapsed()
    );
}

/// Writes zeros to `path` until the file system refuses: the disk is then full to its last
/// bytes.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    for chunk in [1 << 20, 4096, 64] {
        let zeros = vec![0u8; chunk];
        while file.write_all(&zeros).is_ok() {}
    }
    let _ = file.sync_all();
}

/// A full disk under the metadata log, with no produce at all: a CreateTopics cannot be
/// written to the Raft log, so this node's quorum member stops for good. `/v1/ready` must
/// answer 503 and say why (it answered 200 before: readiness only knew about partition
/// appends), and the broker must not panic or exit on its own.
#[test]
fn a_full_disk_under_the_metadata_log_makes_the_broker_unready() {
    let dir = procs::test_dir();
    let mut node = Node::start(dir.path());
    fill(&node.data_dir_from_outside().join("filler"));
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .create()
        .unwrap();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let topic = NewTopic::new("cannot-be-written", 1, TopicReplication::Fixed(1));
    let created = futures::executor::block_on(admin.create_topics(&[topic], &options));
    let created_ok = created.as_ref().is_ok_and(|r| r.iter().all(|t| t.is_ok()));
    assert!(
        !created_ok,
        "a topic was created on a full disk: {created:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        node.assert_alive("on a full disk");
        let answer = node.ready();
        if let Some((503, body)) = &answer {
            assert!(
                body.contains("metadata quorum member stopped")
                    && body.contains("No space left on device"),
                "the reason names the quorum and the error: {body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {answer:?} 30 s after a metadata write failed on a full disk; log:\n{}",
            node.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // An operator asking before a routine restart is told no, and why.
    let (status, body) = node
        .admin_get("/v1/restart-safety")
        .expect("restart-safety answers");
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["safe"], false, "{body}");
    assert!(
        answer["quorumStopped"]
            .as_str()
            .is_some_and(|why| why.contains("No space left on device")),
        "{body}"
    );
    assert!(
        !node.broker_log().contains("panicked"),
        "the broker panicked; log:\n{}",
        node.log_tail()
    );
    assert!(
        !node.root.join("exits").exists(),
        "the broker exited on its own"
    );
}
