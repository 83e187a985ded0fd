//! Followers fetch over one fetcher (one connection) per source broker, however many
//! partitions they follow there, like Kafka's replica fetcher threads; a fetcher ends when
//! nothing is followed at its broker any more. Real broker processes, librdkafka clients.

#[path = "common/procs.rs"]
mod procs;

use procs::{wait_for, ProcCluster};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const TOPIC: &str = "wide";
const PARTITIONS: i32 = 12;

/// Produces `per_partition` records to every partition with acks=all; panics on a failure.
fn produce(rt: &tokio::runtime::Runtime, bootstrap: &str, prefix: &str, per_partition: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    rt.block_on(async {
        let sends: Vec<_> = (0..per_partition * PARTITIONS as usize)
            .map(|i| {
                let value = format!("{prefix}-{i}");
                let record = FutureRecord::<(), String>::to(TOPIC)
                    .partition(i as i32 % PARTITIONS)
                    .payload(&value);
                let delivery = producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("the producer queue has room");
                async move { (delivery.await, value) }
            })
            .collect();
        for (result, value) in futures::future::join_all(sends).await {
            result
                .expect("delivery future completes")
                .unwrap_or_else(|(e, _)| panic!("{value} not acknowledged: {e}"));
        }
    });
}

#[test]
fn followers_fetch_once_per_source_broker_and_drop_fetchers_with_nothing_to_follow() {
    let dir = procs::test_dir();
    let mut cluster = ProcCluster::start(dir.path(), 3, &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bootstrap = cluster.bootstrap();
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &bootstrap);
    procs::create_replicated_topic(&rt, client, TOPIC, PARTITIONS);
    let all_in_sync = |n: usize| {
        let d = procs::describe_topic(&bootstrap, TOPIC);
        d.len() == PARTITIONS as usize && d.values().all(|(l, _, isr)| *l >= 0 && isr.len() == n)
    };
    wait_for("every replica in sync after create", 30, || all_in_sync(3));
    produce(&rt, &bootstrap, "first", 50);
    assert!(
        all_in_sync(3),
        "{:?}",
        procs::describe_topic(&bootstrap, TOPIC)
    );

    // Twelve partitions led by three brokers: every broker follows partitions at both others,
    // with one fetcher each (the old design ran one per followed partition: eight).
    let leaders: std::collections::BTreeSet<i32> = procs::describe_topic(&bootstrap, TOPIC)
        .values()
        .map(|(l, _, _)| *l)
        .collect();
    assert_eq!(leaders.len(), 3, "leaders spread over the brokers");
    for node in 0..3 {
        wait_for(
            &format!("two replica fetchers on broker {node}"),
            15,
            || cluster.metric(node, "fjord_replica_fetchers") == Some(2.0),
        );
    }

    // Broker 2 goes away: its leaderships move, nothing is followed there any more, and the
    // survivors keep exactly one fetcher (towards each other) while replication goes on.
    cluster.kill(2);
    wait_for("no partition led by the killed broker", 30, || {
        let d = procs::describe_topic(&bootstrap, TOPIC);
        d.len() == PARTITIONS as usize && d.values().all(|(l, _, _)| *l == 0 || *l == 1)
    });
    for node in 0..2 {
        wait_for(
            &format!("one replica fetcher left on broker {node}"),
            15,
            || cluster.metric(node, "fjord_replica_fetchers") == Some(1.0),
        );
    }
    produce(&rt, &bootstrap, "second", 20);
    wait_for("both survivors in every ISR", 30, || {
        procs::describe_topic(&bootstrap, TOPIC)
            .values()
            .all(|(_, _, isr)| isr.contains(&0) && isr.contains(&1))
    });
}
