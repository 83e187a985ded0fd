//! The properties files the operator writes are accepted by the real broker's configuration
//! loader (cluster mode included): no unknown keys, no invalid values, every broker a valid
//! quorum member. Catches drift between the operator's builder and the broker.

use fjord_operator::crd::Kafka;
use fjord_operator::resources::broker_config;

fn kafka(yaml: &str) -> Kafka {
    let mut k = Kafka::new("my-cluster", serde_yaml::from_str(yaml).unwrap());
    k.metadata.namespace = Some("prod".into());
    k.metadata.uid = Some("uid".into());
    k
}

#[test]
fn every_broker_file_loads_in_the_broker() {
    for replicas in [1, 2, 3, 5] {
        let k = kafka(&format!(
            r#"
kafka:
  replicas: {replicas}
  listeners:
    - {{name: plain, port: 9092, type: internal, tls: false}}
    - {{name: scram, port: 9094, type: internal, tls: false, authentication: {{type: scram-sha-512}}}}
  authorization: {{type: simple, superUsers: [admin]}}
  config:
    min.insync.replicas: 1
    auto.create.topics.enable: false
    log.retention.hours: 24
  storage: {{type: ephemeral}}
"#
        ));
        assert!(broker_config::validate(&k).is_empty());
        let (cm, _) = broker_config::config_map(&k, "MkU3OEVBNTcwNTJENDM2Qk").unwrap();
        for (file, text) in cm.data.unwrap() {
            let (config, unknown) = fjord_broker::Config::load(Some(&text), &[])
                .unwrap_or_else(|e| panic!("{file} (replicas {replicas}) refused: {e}\n{text}"));
            assert!(unknown.is_empty(), "{file}: unknown keys {unknown:?}");
            let index: i32 = file
                .trim_start_matches("broker-")
                .trim_end_matches(".properties")
                .parse()
                .unwrap();
            assert_eq!(config.node_id, index);
            // The controller listener is quorum-only: clients see REPLICATION plus the two.
            let advertised: Vec<&str> = config
                .advertised_listeners
                .iter()
                .map(|l| l.name.as_str())
                .collect();
            assert_eq!(
                advertised,
                ["REPLICATION", "PLAIN-9092", "SCRAM-9094"],
                "{file}"
            );
        }
    }
}
