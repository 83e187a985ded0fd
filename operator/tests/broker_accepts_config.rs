//! The properties files the operator writes are accepted by the real broker's configuration
//! loader (cluster mode included): no unknown keys, no invalid values, every broker a valid
//! quorum member. Catches drift between the operator's builder and the broker.

use fjord_operator::crd::Kafka;
use fjord_operator::resources::broker_config;
use fjord_operator::resources::services::{ListenerNodePorts, NodePorts};

fn identity(k: &Kafka) -> broker_config::Identity {
    broker_config::Identity::new_cluster("MkU3OEVBNTcwNTJENDM2Qk", k.spec.kafka.replicas)
}

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
        let (cm, _) = broker_config::config_map(&k, &identity(&k), &NodePorts::new()).unwrap();
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

/// A nodeport listener's `${env:FJORD_NODE_ADDRESS}` resolves through the broker's env config
/// provider (the variable the StatefulSet sets from `status.hostIP`).
#[test]
fn nodeport_broker_files_resolve_the_node_address() {
    let k = kafka(
        r#"
kafka:
  replicas: 3
  listeners:
    - {name: plain, port: 9092, type: internal, tls: false}
    - {name: external, port: 9094, type: nodeport, tls: false}
  storage: {type: ephemeral}
"#,
    );
    assert!(broker_config::validate(&k).is_empty());
    let ports = NodePorts::from([(
        "external".to_string(),
        ListenerNodePorts {
            bootstrap: Some(32000),
            brokers: (0..3).map(|i| (i, 32001 + i)).collect(),
        },
    )]);
    let (cm, _) = broker_config::config_map(&k, &identity(&k), &ports).unwrap();
    // The only test in this binary touching the environment; std serialises env access.
    std::env::set_var(broker_config::NODE_ADDRESS_ENV, "192.0.2.7");
    for (file, text) in cm.data.unwrap() {
        let (config, unknown) = fjord_broker::Config::load(Some(&text), &[])
            .unwrap_or_else(|e| panic!("{file} refused: {e}\n{text}"));
        assert!(unknown.is_empty(), "{file}: unknown keys {unknown:?}");
        let external = config.advertised_for("EXTERNAL-9094");
        assert_eq!(external.host, "192.0.2.7", "{file}");
        assert_eq!(i32::from(external.port), 32001 + config.node_id, "{file}");
    }
}
