//! Client quota enforcement against a real in-process broker: a `producer_byte_rate` quota on
//! the default user (every PLAINTEXT client is `User:ANONYMOUS`), set with AlterClientQuotas;
//! librdkafka produces as fast as it can and, once the first throttle shows that it has used
//! the initial allowance, the bytes the broker appends over 30 s must be within ±20% of the quota. Responses carry `throttle_time_ms` (librdkafka's statistics see
//! it), and a client that ignores it is held back by the broker (the muted connection).

mod common;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_client::Connection;
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

#[global_allocator]
static ALLOCATOR: fjord_broker::alloc_guard::GuardedAlloc = fjord_broker::alloc_guard::GuardedAlloc;

const TOPIC: &str = "quota-test";
const QUOTA: f64 = 1024.0 * 1024.0;
const MEASURE: Duration = Duration::from_secs(30);

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Counts deliveries and remembers the largest throttle time librdkafka reported.
#[derive(Default)]
struct Observed {
    delivered: AtomicU64,
    failed: AtomicU64,
    max_throttle_ms: AtomicI64,
}

struct Ctx(Arc<Observed>);
impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        for b in stats.brokers.values() {
            if let Some(w) = &b.throttle {
                self.0.max_throttle_ms.fetch_max(w.max, Ordering::Relaxed);
            }
        }
    }
}
impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn batch(len: usize) -> Bytes {
    common::record_batch(None, Bytes::from(vec![b'q'; len]), None)
}

fn produce(len: usize) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(len)))])])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_byte_rate_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let running = common::start_broker(dir.path(), &[]).await;
    let addr = running.kafka_addrs[0];
    let broker = running.broker.clone();
    let mut c = Connection::connect(addr).await.unwrap();

    let create = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_num_partitions(1)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    assert_eq!(c.send(&create, 7).await.unwrap().topics[0].error_code, 0);
    // Without a quota nothing is throttled.
    let r = c.send(&produce(1000), 9).await.unwrap();
    assert_eq!(r.throttle_time_ms, 0);

    let alter = AlterClientQuotasRequest::default().with_entries(vec![EntryData::default()
        .with_entity(vec![EntityData::default()
            .with_entity_type(s("user"))
            .with_entity_name(None)])
        .with_ops(vec![OpData::default()
            .with_key(s("producer_byte_rate"))
            .with_value(QUOTA)])]);
    let r = c.send(&alter, 1).await.unwrap();
    assert_eq!(r.entries[0].error_code, 0);

    // librdkafka, as fast as it can, for 30 s.
    let observed = Arc::new(Observed::default());
    let bootstrap = addr.to_string();
    let obs = observed.clone();
    let b = broker.clone();
    let (appended, elapsed) = tokio::task::spawn_blocking(move || {
        let ctx = Ctx(obs.clone());
        let producer: BaseProducer<Ctx> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "20000")
            .set("statistics.interval.ms", "500")
            .set("message.timeout.ms", "120000")
            .create_with_context(ctx)
            .unwrap();
        let value = vec![b'v'; 1024];
        let send = |p: &BaseProducer<Ctx>| {
            let record = BaseRecord::<(), [u8]>::to(TOPIC).payload(&value[..]);
            match p.send(record) {
                Ok(()) => {}
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    p.poll(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("send failed: {e}"),
            }
            p.poll(Duration::ZERO);
        };
        // Like Kafka, a client starting from nothing may send (quota.window.num - 1) windows'
        // worth at once: the measurement starts once the producer is being throttled.
        let warmup = Instant::now();
        while obs.max_throttle_ms.load(Ordering::Relaxed) == 0 {
            assert!(
                warmup.elapsed() < Duration::from_secs(30),
                "never throttled"
            );
            send(&producer);
        }
        let start_bytes = b.metrics.bytes_in.get();
        let started = Instant::now();
        let mut next_print = 5;
        let mut last = start_bytes;
        while started.elapsed() < MEASURE {
            if started.elapsed().as_secs() >= next_print {
                let now = b.metrics.bytes_in.get();
                println!("after {next_print} s: +{} bytes", now - last);
                last = now;
                next_print += 5;
            }
            send(&producer);
        }
        let appended = b.metrics.bytes_in.get() - start_bytes;
        let elapsed = started.elapsed();
        // The queue still holds what the quota kept back; drop it rather than wait.
        producer.purge(rdkafka::producer::PurgeConfig::default().queue());
        let _ = producer.flush(Duration::from_secs(30));
        (appended, elapsed)
    })
    .await
    .unwrap();
    let rate = appended as f64 / elapsed.as_secs_f64();
    println!(
        "producer_byte_rate quota {QUOTA} B/s: broker appended {appended} bytes in {:.1} s = {rate:.0} B/s ({:.2}x the quota); librdkafka delivered {} records, max throttle_time_ms seen {}",
        elapsed.as_secs_f64(),
        rate / QUOTA,
        observed.delivered.load(Ordering::Relaxed),
        observed.max_throttle_ms.load(Ordering::Relaxed),
    );
    assert!(
        (rate / QUOTA - 1.0).abs() <= 0.2,
        "achieved {rate:.0} B/s for a quota of {QUOTA} B/s"
    );
    assert!(
        observed.max_throttle_ms.load(Ordering::Relaxed) > 0,
        "librdkafka saw no throttle_time_ms"
    );
    assert!(broker
        .metrics
        .render()
        .contains("kafka_server_produce_throttle_time{client_id=\"\",user=\"ANONYMOUS\"}"));

    // A client that ignores throttle_time_ms: the broker answers, then reads nothing more from
    // the connection until the throttle time has passed.
    let mut throttle = 0;
    for _ in 0..30 {
        let r = c.send(&produce(900 * 1024), 9).await.unwrap();
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        throttle = r.throttle_time_ms;
        if throttle > 0 {
            break;
        }
    }
    assert!(throttle > 0, "over-quota produces carry throttle_time_ms");
    let sent = Instant::now();
    let r2 = c.send(&produce(10), 9).await.unwrap();
    let waited = sent.elapsed();
    assert_eq!(r2.responses[0].partition_responses[0].error_code, 0);
    assert!(
        waited >= Duration::from_millis(throttle as u64 * 9 / 10),
        "next request answered after {waited:?}, throttle was {throttle} ms"
    );
}
