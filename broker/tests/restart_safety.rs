//! `/v1/restart-safety` on a real broker: safe while it hosts nothing, unsafe (naming the
//! partitions) once it is the only in-sync replica of a topic.

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).unwrap();
    serde_json::from_str(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_replica_of_a_topic_is_not_safe_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let overrides = [
        ("listeners", "PLAINTEXT://127.0.0.1:0"),
        ("admin.listener", "127.0.0.1:0"),
        ("node.id", "4"),
        ("log.dirs", dir.path().to_str().unwrap()),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let (config, _) = fjord_broker::Config::load(None, &overrides).unwrap();
    let running = fjord_broker::start(config).await.unwrap();

    let answer = get(running.admin_addr, "/v1/restart-safety").await;
    assert_eq!(answer["safe"], true, "{answer}");
    assert_eq!(answer["broker"], 4);

    let mut conn = fjord_client::Connection::connect(running.kafka_addrs[0])
        .await
        .unwrap();
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("orders")))
            .with_num_partitions(2)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let response = conn.send(&request, 7).await.unwrap();
    assert_eq!(response.topics[0].error_code, 0);

    let answer = get(running.admin_addr, "/v1/restart-safety").await;
    assert_eq!(answer["safe"], false, "{answer}");
    let blocking = answer["blocking"].as_array().unwrap();
    assert_eq!(blocking.len(), 2);
    assert_eq!(blocking[0]["topic"], "orders");
    assert_eq!(blocking[0]["reason"], "wouldGoOffline");
}
