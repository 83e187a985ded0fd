//! Unit tests of the broker configuration builder.
use super::*;
use crate::resources::services::ListenerNodePorts;
use crate::resources::test_support::{kafka, THREE_BROKERS};

/// The identity a new cluster of `k`'s size gets (cluster id "abc").
fn ids(k: &Kafka) -> Identity {
    Identity::new_cluster("abc", k.spec.kafka.replicas)
}

fn props(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn each_broker_gets_its_id_roles_and_pod_dns() {
    let k = kafka(THREE_BROKERS);
    let (cm, _) = config_map(&k, &ids(&k), &NodePorts::new()).unwrap();
    let data = cm.data.unwrap();
    assert_eq!(data.len(), 3);
    let b1 = props(&data["broker-1.properties"]);
    assert_eq!(b1["node.id"], "1");
    assert_eq!(b1["process.roles"], "broker,controller");
    assert_eq!(b1["cluster.id"], "abc");
    assert_eq!(
        b1["advertised.listeners"],
        "REPLICATION://my-cluster-kafka-1.my-cluster-kafka-brokers.prod.svc:9091,\
             PLAIN-9092://my-cluster-kafka-1.my-cluster-kafka-brokers.prod.svc:9092"
    );
    assert_eq!(
        b1["listeners"],
        "CONTROLLER://0.0.0.0:9090,REPLICATION://0.0.0.0:9091,PLAIN-9092://0.0.0.0:9092"
    );
    assert_eq!(b1["min.insync.replicas"], "2");
    assert_eq!(b1["auto.create.topics.enable"], "false");
    assert_eq!(
        b1["controller.quorum.voters"],
        "0@my-cluster-kafka-0.my-cluster-kafka-brokers.prod.svc:9090,\
             1@my-cluster-kafka-1.my-cluster-kafka-brokers.prod.svc:9090,\
             2@my-cluster-kafka-2.my-cluster-kafka-brokers.prod.svc:9090"
    );
    assert_eq!(
        b1["listener.security.protocol.map"],
        "CONTROLLER:SSL,REPLICATION:SSL,PLAIN-9092:PLAINTEXT"
    );
    // The brokers' own listeners: mutual TLS with the cluster CA, this broker's certificate.
    for listener in ["controller", "replication"] {
        let key = |k: &str| b1[&format!("listener.name.{listener}.{k}")].clone();
        assert_eq!(key("ssl.client.auth"), "required");
        assert_eq!(key("ssl.truststore.type"), "PEM");
        assert_eq!(
            key("ssl.truststore.location"),
            "/etc/fjord-tls/cluster-ca/ca.crt"
        );
        assert_eq!(
            key("ssl.keystore.certificate.chain"),
            "/etc/fjord-tls/broker/my-cluster-kafka-1.crt"
        );
    }
    assert!(
        !b1.contains_key("super.users"),
        "no authorizer, no super users"
    );
}

#[test]
fn voters_stay_as_created_when_the_cluster_grows() {
    let mut k = kafka(THREE_BROKERS);
    k.spec.kafka.replicas = 1;
    let created = ids(&k);
    assert_eq!(created.voters, vec![0]);
    k.spec.kafka.replicas = 3;
    let (cm, _) = config_map(&k, &created, &NodePorts::new()).unwrap();
    let data = cm.data.unwrap();
    for ordinal in 0..3 {
        let p = props(&data[&file_name(ordinal)]);
        assert_eq!(
            p["controller.quorum.voters"],
            "0@my-cluster-kafka-0.my-cluster-kafka-brokers.prod.svc:9090"
        );
        let roles = if ordinal == 0 {
            "broker,controller"
        } else {
            "broker"
        };
        assert_eq!(p["process.roles"], roles);
    }
    // An operator without the status reads the voters back from a broker's file.
    assert_eq!(voters_from_properties(&data[&file_name(2)]), Some(vec![0]));
    let three = ids(&kafka(THREE_BROKERS));
    let (cm, _) = config_map(&kafka(THREE_BROKERS), &three, &NodePorts::new()).unwrap();
    assert_eq!(
        voters_from_properties(&cm.data.unwrap()[&file_name(0)]),
        Some(vec![0, 1, 2])
    );
    assert_eq!(voters_from_properties("controller.quorum.voters=x@y"), None);
    assert_eq!(voters_from_properties("node.id=1"), None);
}

#[test]
fn brokers_beyond_three_are_not_voters() {
    let mut k = kafka(THREE_BROKERS);
    k.spec.kafka.replicas = 5;
    let (cm, _) = config_map(&k, &ids(&k), &NodePorts::new()).unwrap();
    let b4 = props(&cm.data.unwrap()["broker-4.properties"]);
    assert_eq!(b4["process.roles"], "broker");
    assert!(b4["listeners"].contains("CONTROLLER://0.0.0.0:"));
    assert!(
        b4["advertised.listeners"].contains("CONTROLLER://"),
        "a learner advertises where the quorum leader reaches it"
    );
    assert!(validate(&k).is_empty(), "{:?}", validate(&k));
    assert_eq!(b4["controller.quorum.voters"].split(',').count(), 3);
}

#[test]
fn hash_follows_shared_config_not_broker_count() {
    let k = kafka(THREE_BROKERS);
    let (_, h1) = config_map(&k, &ids(&k), &NodePorts::new()).unwrap();
    let mut more = k.clone();
    more.spec.kafka.replicas = 4;
    assert_eq!(
        config_map(&more, &ids(&k), &NodePorts::new()).unwrap().1,
        h1,
        "scale-up must not roll brokers"
    );
    let mut edited = k.clone();
    edited
        .spec
        .kafka
        .config
        .insert("num.partitions".into(), serde_json::json!(12));
    assert_ne!(
        config_map(&edited, &ids(&k), &NodePorts::new()).unwrap().1,
        h1
    );
}

#[test]
fn dynamic_keys_change_the_files_but_not_the_hash() {
    let k = kafka(THREE_BROKERS);
    let (cm, hash) = config_map(&k, &ids(&k), &NodePorts::new()).unwrap();
    let mut edited = k.clone();
    for (key, value) in [
        ("log.retention.hours", serde_json::json!(170)),
        ("min.insync.replicas", serde_json::json!(1)),
    ] {
        edited.spec.kafka.config.insert(key.into(), value);
    }
    let (cm2, hash2) = config_map(&edited, &ids(&k), &NodePorts::new()).unwrap();
    assert_eq!(hash, hash2, "a dynamic change must not roll brokers");
    assert_ne!(cm.data, cm2.data);
    assert!(cm2.data.unwrap()["broker-0.properties"].contains("log.retention.hours=170"));
    let dynamic = dynamic_config(&edited).unwrap();
    assert_eq!(dynamic["log.retention.hours"], "170");
    assert_eq!(dynamic["min.insync.replicas"], "1");
    assert!(!dynamic.contains_key("default.replication.factor"));
    let current = BTreeMap::from([
        ("log.retention.hours".to_string(), "170".to_string()),
        ("compression.type".to_string(), "zstd".to_string()),
        (
            "follower.replication.throttled.rate".to_string(),
            "1000".to_string(),
        ),
    ]);
    let (set, delete) = dynamic_changes(&dynamic, &current);
    assert_eq!(
        set,
        BTreeMap::from([("min.insync.replicas".into(), "1".into())])
    );
    assert_eq!(delete, vec!["compression.type".to_string()]);
}

#[test]
fn sasl_and_tls_listeners_map_to_kafka_protocols() {
    let k = kafka(
        r#"
kafka:
  replicas: 1
  listeners:
    - {name: plain, port: 9092, type: internal, tls: false}
    - {name: scram, port: 9094, type: internal, tls: false, authentication: {type: scram-sha-512}}
    - {name: tls, port: 9093, type: internal, tls: true, authentication: {type: tls}}
  authorization: {type: simple, superUsers: [admin, "User:ops"]}
  storage: {type: ephemeral}
"#,
    );
    let p = props(&shared_properties(&k, &ids(&k)).unwrap());
    assert_eq!(
        p["listener.security.protocol.map"],
        "CONTROLLER:SSL,REPLICATION:SSL,PLAIN-9092:PLAINTEXT,\
             SCRAM-9094:SASL_PLAINTEXT,TLS-9093:SSL"
    );
    assert_eq!(
        p["listener.name.scram-9094.sasl.enabled.mechanisms"],
        "SCRAM-SHA-512"
    );
    assert_eq!(
        p["super.users"],
        "User:CN=my-cluster-kafka,O=fjord.dev;User:CN=fjord-operator,O=fjord.dev;\
         User:admin;User:ops",
        "the brokers and the operator first"
    );
    // Client certificates on the tls listener: signed by the clients CA.
    assert_eq!(p["listener.name.tls-9093.ssl.client.auth"], "required");
    assert_eq!(
        p["listener.name.tls-9093.ssl.truststore.location"],
        "/etc/fjord-tls/clients-ca/ca.crt"
    );
    assert!(!p.contains_key("listener.name.scram-9094.ssl.client.auth"));
    assert_eq!(Identity::new_cluster("x", 1).voters, vec![0]);
    // The TLS listener serves broker 0's certificate from the mounted Secret.
    let own = props(&pod_properties(&k, 0, &[0], &NodePorts::default()).unwrap());
    assert_eq!(own["listener.name.tls-9093.ssl.keystore.type"], "PEM");
    assert_eq!(
        own["listener.name.tls-9093.ssl.keystore.certificate.chain"],
        "/etc/fjord-tls/broker/my-cluster-kafka-0.crt"
    );
    assert_eq!(
        own["listener.name.tls-9093.ssl.keystore.key"],
        "/etc/fjord-tls/broker/my-cluster-kafka-0.key"
    );
    assert!(!own.contains_key("listener.name.plain-9092.ssl.keystore.type"));
}

#[test]
fn operator_owned_keys_and_nested_values_are_refused() {
    let mut k = kafka(THREE_BROKERS);
    k.spec
        .kafka
        .config
        .insert("node.id".into(), serde_json::json!(7));
    k.spec
        .kafka
        .config
        .insert("x".into(), serde_json::json!({"nested": true}));
    let problems = validate(&k);
    assert_eq!(problems.len(), 2, "{problems:?}");
    // Client-certificate authentication needs a TLS listener.
    let mut tls = kafka(THREE_BROKERS);
    tls.spec.kafka.listeners[0].authentication =
        Some(serde_json::from_value(serde_json::json!({"type": "tls"})).unwrap());
    assert!(
        validate(&tls)[0].contains("needs tls: true"),
        "{:?}",
        validate(&tls)
    );
    tls.spec.kafka.listeners[0].tls = true;
    assert!(validate(&tls).is_empty(), "{:?}", validate(&tls));
    assert!(problems[0].contains("node.id"));
    assert!(shared_properties(&k, &ids(&k)).is_err());
}

#[test]
fn nodeport_listeners_advertise_the_node_address_and_own_node_port() {
    let k = kafka(
        r#"
kafka:
  replicas: 3
  listeners:
    - {name: plain, port: 9092, type: internal, tls: false}
    - name: external
      port: 9094
      type: nodeport
      tls: false
      configuration:
        brokers:
          - {broker: 1, advertisedPort: 443}
          - {broker: 2, advertisedHost: kafka-2.example.com}
  storage: {type: ephemeral}
"#,
    );
    assert!(validate(&k).is_empty(), "{:?}", validate(&k));
    let missing = config_map(&k, &ids(&k), &NodePorts::new()).unwrap_err();
    assert!(missing.contains("my-cluster-kafka-external-0"), "{missing}");
    let ports = NodePorts::from([(
        "external".to_string(),
        ListenerNodePorts {
            bootstrap: Some(31000),
            brokers: BTreeMap::from([(0, 31010), (1, 31011), (2, 31012)]),
        },
    )]);
    let (cm, _) = config_map(&k, &ids(&k), &ports).unwrap();
    let data = cm.data.unwrap();
    let advertised = |i: i32| props(&data[&file_name(i)])["advertised.listeners"].clone();
    let pod = |i: i32| format!("my-cluster-kafka-{i}.my-cluster-kafka-brokers.prod.svc");
    assert_eq!(
        advertised(0),
        format!(
            "REPLICATION://{}:9091,PLAIN-9092://{}:9092,\
                 EXTERNAL-9094://${{env:FJORD_NODE_ADDRESS}}:31010",
            pod(0),
            pod(0)
        )
    );
    assert!(advertised(1).ends_with("EXTERNAL-9094://${env:FJORD_NODE_ADDRESS}:443"));
    assert!(advertised(2).ends_with("EXTERNAL-9094://kafka-2.example.com:31012"));
    let b0 = props(&data["broker-0.properties"]);
    assert_eq!(b0["config.providers"], "env");
    assert_eq!(b0["config.providers.env.class"], ENV_CONFIG_PROVIDER);
    assert!(b0["listeners"].ends_with(",EXTERNAL-9094://0.0.0.0:9094"));
    assert_eq!(
        b0["listener.security.protocol.map"],
        "CONTROLLER:SSL,REPLICATION:SSL,PLAIN-9092:PLAINTEXT,\
             EXTERNAL-9094:PLAINTEXT"
    );

    // Without nodeport listeners no provider is configured (and the hash is unchanged).
    let plain =
        props(&shared_properties(&kafka(THREE_BROKERS), &ids(&kafka(THREE_BROKERS))).unwrap());
    assert!(!plain.contains_key("config.providers"));
    let mut owned = kafka(THREE_BROKERS);
    owned
        .spec
        .kafka
        .config
        .insert("config.providers.env.class".into(), serde_json::json!("x"));
    assert!(validate(&owned)[0].contains("config.providers.env.class"));
}

#[test]
fn jbod_gets_one_log_dir_per_volume() {
    let k = kafka(
        r#"
kafka:
  replicas: 1
  listeners: [{name: plain, port: 9092, type: internal, tls: false}]
  storage:
    type: jbod
    volumes:
      - {id: 0, type: persistent-claim, size: 10Gi}
      - {id: 1, type: persistent-claim, size: 10Gi}
"#,
    );
    assert_eq!(
        log_dirs(&k),
        "/var/lib/fjord/data-0/log,/var/lib/fjord/data-1/log"
    );
}
