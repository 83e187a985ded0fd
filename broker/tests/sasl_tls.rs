//! SASL and TLS listeners against real clients: librdkafka producing and consuming over SASL_SSL
//! (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN), SASL_PLAINTEXT and SSL with client certificates, with
//! SCRAM users created through the broker's own AlterUserScramCredentials API. Adversarial cases
//! on raw connections: wrong password and unknown user (same error text), replayed and malformed
//! SCRAM messages, requests before authentication, unsupported mechanisms, the legacy v0 flow.
//! No adversarial connection gets data, and the broker keeps serving everyone else.

mod security_support;

use std::time::{Duration, Instant};

use fjord_broker::auth::scram::ScramMechanism;
use kafka_protocol::messages::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use security_support::*;

#[global_allocator]
static ALLOCATOR: fjord_broker::alloc_guard::GuardedAlloc = fjord_broker::alloc_guard::GuardedAlloc;

const FAILED: &str = "kafka_server_socket_server_metrics_failed_authentication_total";
const OK: &str = "kafka_server_socket_server_metrics_successful_authentication_total";

fn failure_text(m: &str) -> String {
    format!("Authentication failed during authentication due to invalid credentials with SASL mechanism {m}")
}

/// Produces `n` records with librdkafka configured by `conf`, consumes them back, checks them.
fn roundtrip(conf: &[(&str, &str)], topic: &str, n: usize) {
    let mut cc = ClientConfig::new();
    for (k, v) in conf {
        cc.set(*k, *v);
    }
    let producer: BaseProducer = cc.clone().set("linger.ms", "5").create().unwrap();
    for i in 0..n {
        let v = format!("{topic}-{i}");
        producer
            .send(BaseRecord::<str, str>::to(topic).key("k").payload(&v))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let consumer: BaseConsumer = cc
        .set("group.id", format!("g-{topic}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < n && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            got.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    let want: Vec<String> = (0..n).map(|i| format!("{topic}-{i}")).collect();
    assert_eq!(got, want);
}

#[test]
fn rdkafka_over_sasl_ssl_sasl_plaintext_and_mtls() {
    let pki = pki();
    let b = start_broker(&pki, &[]);
    b.create_user("alice", "alice-secret");
    let ca = path_str(&pki.ca_path);
    let sasl_ssl = b.sasl_ssl.to_string();
    for (mechanism, user, pw, topic) in [
        ("SCRAM-SHA-512", "alice", "alice-secret", "t-scram512"),
        ("SCRAM-SHA-256", "alice", "alice-secret", "t-scram256"),
        ("PLAIN", "plainuser", "plainpw", "t-plain"),
    ] {
        roundtrip(
            &[
                ("bootstrap.servers", &sasl_ssl),
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanisms", mechanism),
                ("sasl.username", user),
                ("sasl.password", pw),
                ("ssl.ca.location", &ca),
            ],
            topic,
            50,
        );
    }
    roundtrip(
        &[
            ("bootstrap.servers", &b.sasl_plaintext.to_string()),
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "alice"),
            ("sasl.password", "alice-secret"),
        ],
        "t-sasl-plaintext",
        20,
    );
    let cert = pki.write("client.pem", &pki.client.0);
    let key = pki.write("client.key", &pki.client.1);
    roundtrip(
        &[
            ("bootstrap.servers", &b.ssl.to_string()),
            ("security.protocol", "SSL"),
            ("ssl.ca.location", &ca),
            ("ssl.certificate.location", &path_str(&cert)),
            ("ssl.key.location", &path_str(&key)),
        ],
        "t-mtls",
        20,
    );
    assert!(b.counter(OK, "SASL_SSL") >= 3);
    assert!(b.counter(OK, "SSL") >= 1);
    assert_eq!(b.counter(FAILED, "SASL_SSL"), 0);
}

#[test]
fn rdkafka_with_a_wrong_password_gets_nothing() {
    let pki = pki();
    let b = start_broker(&pki, &[]);
    b.create_user("alice", "alice-secret");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", b.sasl_ssl.to_string())
        .set("security.protocol", "SASL_SSL")
        .set("sasl.mechanisms", "SCRAM-SHA-512")
        .set("sasl.username", "alice")
        .set("sasl.password", "wrong")
        .set("ssl.ca.location", path_str(&pki.ca_path))
        .set("message.timeout.ms", "3000")
        .create()
        .unwrap();
    producer
        .send(BaseRecord::<str, str>::to("t-denied").payload("x"))
        .unwrap();
    // The record times out undelivered (flush returns once its failed delivery is reported).
    let _ = producer.flush(Duration::from_secs(10));
    assert_eq!(producer.in_flight_count(), 0);
    drop(producer);
    assert!(b.counter(FAILED, "SASL_SSL") >= 1);
    assert!(!b
        .running
        .broker
        .metadata
        .snapshot()
        .topics
        .contains_key("t-denied"));
}

#[test]
fn scram_failures_look_the_same_and_close_the_connection() {
    let pki = pki();
    let b = start_broker(&pki, &[]);
    b.create_user("alice", "alice-secret");
    b.rt.block_on(async {
        for m in ScramMechanism::ALL {
            for (user, pw) in [("alice", "wrong"), ("mallory", "whatever")] {
                let mut c = connect(b.sasl_plaintext).await;
                let r = scram_login(&mut c, m, user, pw).await;
                assert_eq!(r.error_code, 58, "{user}/{}", m.name());
                assert_eq!(
                    r.error_message.as_deref(),
                    Some(failure_text(m.name()).as_str())
                );
                assert!(r.auth_bytes.is_empty());
                assert!(closed(&mut c).await, "connection closed after a failure");
            }
            // The right password still works.
            let mut c = connect(b.sasl_plaintext).await;
            assert_eq!(
                scram_login(&mut c, m, "alice", "alice-secret")
                    .await
                    .error_code,
                0
            );
            let md = call(&mut c, &MetadataRequest::default(), 12).await.unwrap();
            assert_eq!(md.brokers[0].port, b.sasl_plaintext.port() as i32);
        }
    });
    assert_eq!(b.counter(FAILED, "SASL_PLAINTEXT"), 4);
    assert_eq!(b.counter(OK, "SASL_PLAINTEXT"), 2);
}

#[test]
fn failed_authentications_are_delayed_doubling() {
    let pki = pki();
    let b = start_broker(
        &pki,
        &[("connection.failed.authentication.delay.ms", "200")],
    );
    b.rt.block_on(async {
        let mut took = Vec::new();
        for _ in 0..2 {
            let mut c = connect(b.sasl_plaintext).await;
            let h = handshake(&mut c, "PLAIN", 1).await;
            assert_eq!(h.error_code, 0);
            let started = Instant::now();
            let r = authenticate(&mut c, b"\0plainuser\0nope").await.unwrap();
            took.push(started.elapsed());
            assert_eq!(
                r.error_message.as_deref(),
                Some(failure_text("PLAIN").as_str())
            );
        }
        assert!(took[0] >= Duration::from_millis(200), "{took:?}");
        assert!(took[1] >= Duration::from_millis(400), "{took:?}");
    });
}

#[test]
fn replayed_client_final_is_refused() {
    let pki = pki();
    let b = start_broker(&pki, &[]);
    b.create_user("alice", "alice-secret");
    b.rt.block_on(async {
        let m = ScramMechanism::Sha512;
        // A successful exchange, recorded.
        let mut a = connect(b.sasl_plaintext).await;
        assert_eq!(handshake(&mut a, m.name(), 1).await.error_code, 0);
        let mut client = ScramClient::new(m, "alice");
        let first = client.first();
        let sf = authenticate(&mut a, first.as_bytes())
            .await
            .unwrap()
            .auth_bytes;
        let fin = client.final_message(&sf, "alice-secret");
        assert_eq!(
            authenticate(&mut a, fin.as_bytes())
                .await
                .unwrap()
                .error_code,
            0
        );
        // Replayed on the same, authenticated connection: refused, connection closed.
        let r = authenticate(&mut a, fin.as_bytes()).await.unwrap();
        assert_eq!(r.error_code, 34);
        assert!(closed(&mut a).await);
        // Replayed on a new connection after the same client-first: the server nonce differs.
        let mut c = connect(b.sasl_plaintext).await;
        assert_eq!(handshake(&mut c, m.name(), 1).await.error_code, 0);
        let sf2 = authenticate(&mut c, first.as_bytes())
            .await
            .unwrap()
            .auth_bytes;
        assert_ne!(sf, sf2);
        let r = authenticate(&mut c, fin.as_bytes()).await.unwrap();
        assert_eq!(r.error_code, 58);
        assert_eq!(
            r.error_message.as_deref(),
            Some(failure_text(m.name()).as_str())
        );
        assert!(closed(&mut c).await);
        // Replayed as the first message of an exchange.
        let mut c = connect(b.sasl_plaintext).await;
        assert_eq!(handshake(&mut c, m.name(), 1).await.error_code, 0);
        assert_eq!(
            authenticate(&mut c, fin.as_bytes())
                .await
                .unwrap()
                .error_code,
            58
        );
    });
}

#[test]
fn malformed_sasl_messages_fail_without_harm() {
    let pki = pki();
    let b = start_broker(&pki, &[]);
    b.create_user("alice", "alice-secret");
    let long = vec![b'n'; 200_000];
    let firsts: Vec<&[u8]> = vec![
        b"",
        b"\xff\xfe\x00",
        b"n",
        b"n,,",
        b"n,,n=alice",
        b"p=tls-unique,,n=alice,r=x",
        b"n,,n=al=ice,r=x",
        b"n,,n=alice,r=",
        b"n,,n=alice,r=a,b",
        b"n,a=bob,n=alice,r=x",
        b"n,,n=alice,r=x,tokenauth=true",
        &long,
    ];
    b.rt.block_on(async {
        for (i, junk) in firsts.iter().enumerate() {
            let mut c = connect(b.sasl_plaintext).await;
            assert_eq!(handshake(&mut c, "SCRAM-SHA-256", 1).await.error_code, 0);
            let r = authenticate(&mut c, junk).await.unwrap();
            assert_eq!(r.error_code, 58, "case {i}");
            assert!(closed(&mut c).await, "case {i}");
        }
        let finals: Vec<String> = vec![
            "".into(),
            "c=biws".into(),
            "c=biws,r=x,p=AAAA".into(),
            "p=".into(),
            ",,,,".into(),
            "c=eSws,r=NONCE,p=AAAA".into(),
            "c=biws,r=NONCE,p=!!".into(),
            "c=biws,r=NONCE".into(),
            "c=biws,r=NONCEx,p=AAAA".into(),
        ];
        for (i, f) in finals.iter().enumerate() {
            let mut c = connect(b.sasl_plaintext).await;
            assert_eq!(handshake(&mut c, "SCRAM-SHA-256", 1).await.error_code, 0);
            let sf = authenticate(&mut c, b"n,,n=alice,r=abc")
                .await
                .unwrap()
                .auth_bytes;
            let nonce = std::str::from_utf8(&sf).unwrap()[2..]
                .split(',')
                .next()
                .unwrap()
                .to_string();
            let r = authenticate(&mut c, f.replace("NONCE", &nonce).as_bytes())
                .await
                .unwrap();
            assert_eq!(r.error_code, 58, "final case {i}");
            assert!(closed(&mut c).await);
        }
        // PLAIN junk.
        for junk in [
            &b""[..],
            b"\0",
            b"\0plainuser",
            b"a\0b\0c\0d",
            b"\0plainuser\0plainpw\0",
        ] {
            let mut c = connect(b.sasl_plaintext).await;
            assert_eq!(handshake(&mut c, "PLAIN", 1).await.error_code, 0);
            assert_eq!(authenticate(&mut c, junk).await.unwrap().error_code, 58);
        }
        // A SaslAuthenticate body that does not decode closes the connection.
        let mut c = connect(b.sasl_plaintext).await;
        assert_eq!(handshake(&mut c, "PLAIN", 1).await.error_code, 0);
        let mut raw = vec![0, 36, 0, 2, 0, 0, 0, 9, 0, 1, b'x', 0];
        raw.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
        let mut fc = fjord_client::Connection::connect(b.sasl_plaintext)
            .await
            .unwrap();
        fc.send_raw_frame(&raw).await.unwrap();
        assert!(fc.read_frame().await.is_err());
        // Everyone else is still served.
        let mut ok = connect(b.sasl_plaintext).await;
        assert_eq!(
            scram_login(&mut ok, ScramMechanism::Sha256, "alice", "alice-secret")
                .await
                .error_code,
            0
        );
    });
}

#[test]
fn requests_before_authentication_close_the_connection() {
    let pki = pki();
    let b = start_broker(&pki, &[]);
    b.create_user("alice", "alice-secret");
    b.rt.block_on(async {
        let topic = CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(TopicName(s("sneaky")))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]);
        // ApiVersions is allowed before the handshake (and lists the SASL APIs).
        let mut c = connect(b.sasl_plaintext).await;
        let v = call(&mut c, &ApiVersionsRequest::default(), 3)
            .await
            .unwrap();
        assert!(v
            .api_keys
            .iter()
            .any(|k| k.api_key == 17 && k.max_version == 1));
        assert!(v
            .api_keys
            .iter()
            .any(|k| k.api_key == 36 && k.max_version == 2));
        // Metadata before the handshake: closed, no answer.
        assert!(call(&mut c, &MetadataRequest::default(), 12).await.is_err());
        // CreateTopics after the handshake, before the exchange finishes.
        let mut c = connect(b.sasl_plaintext).await;
        assert_eq!(handshake(&mut c, "SCRAM-SHA-512", 1).await.error_code, 0);
        assert!(call(&mut c, &topic, 7).await.is_err());
        // In the middle of the exchange.
        let mut c = connect(b.sasl_plaintext).await;
        assert_eq!(handshake(&mut c, "SCRAM-SHA-512", 1).await.error_code, 0);
        let client = ScramClient::new(ScramMechanism::Sha512, "alice");
        authenticate(&mut c, client.first().as_bytes())
            .await
            .unwrap();
        assert!(call(&mut c, &topic, 7).await.is_err());
        // SaslAuthenticate before any handshake.
        let mut c = connect(b.sasl_plaintext).await;
        let r = authenticate(&mut c, b"n,,n=alice,r=x").await.unwrap();
        assert_eq!(r.error_code, 34);
        assert!(closed(&mut c).await);
        // A second handshake.
        let mut c = connect(b.sasl_plaintext).await;
        assert_eq!(handshake(&mut c, "PLAIN", 1).await.error_code, 0);
        assert_eq!(handshake(&mut c, "PLAIN", 1).await.error_code, 34);
        assert!(closed(&mut c).await);
        // The same over TLS.
        let mut t = tls_connect(b.sasl_ssl, &pki.ca.pem, None).await.unwrap();
        assert!(call(&mut t, &topic, 7).await.is_err());
    });
    assert!(!b
        .running
        .broker
        .metadata
        .snapshot()
        .topics
        .contains_key("sneaky"));
}

#[test]
fn unsupported_mechanisms_are_refused_with_the_enabled_list() {
    let pki = pki();
    let b = start_broker(
        &pki,
        &[(
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms",
            "SCRAM-SHA-512",
        )],
    );
    b.rt.block_on(async {
        for (mechanism, version) in [
            ("GSSAPI", 1),
            ("OAUTHBEARER", 0),
            ("PLAIN", 1),
            ("scram-sha-512", 1),
            ("", 1),
        ] {
            let mut c = connect(b.sasl_plaintext).await;
            let h = handshake(&mut c, mechanism, version).await;
            assert_eq!(h.error_code, 33, "{mechanism}");
            let names: Vec<String> = h.mechanisms.iter().map(|m| m.to_string()).collect();
            assert_eq!(names, vec!["SCRAM-SHA-512"]);
            assert!(closed(&mut c).await);
        }
        // The global list still applies to the other SASL listener.
        let mut t = tls_connect(b.sasl_ssl, &pki.ca.pem, None).await.unwrap();
        let h = handshake(&mut t, "PLAIN", 1).await;
        assert_eq!(h.error_code, 0);
        assert_eq!(h.mechanisms.len(), 3);
        // A handshake on a listener without SASL: ILLEGAL_SASL_STATE.
        let mut p = connect(b.plaintext).await;
        assert_eq!(handshake(&mut p, "PLAIN", 1).await.error_code, 34);
    });
}

#[test]
fn legacy_v0_handshake_with_raw_tokens() {
    let pki = pki();
    let b = start_broker(&pki, &[]);
    b.create_user("alice", "alice-secret");
    b.rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut c = connect(b.sasl_plaintext).await;
        assert_eq!(handshake(&mut c, "SCRAM-SHA-256", 0).await.error_code, 0);
        let mut client = ScramClient::new(ScramMechanism::Sha256, "alice");
        let send = |t: Vec<u8>| {
            let mut f = (t.len() as i32).to_be_bytes().to_vec();
            f.extend(t);
            f
        };
        c.write_all(&send(client.first().into_bytes()))
            .await
            .unwrap();
        let sf = read_frame(&mut c).await.unwrap();
        let fin = client.final_message(&sf, "alice-secret");
        c.write_all(&send(fin.into_bytes())).await.unwrap();
        let sfin = read_frame(&mut c).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&sfin).unwrap(),
            client.expected_server_final.unwrap()
        );
        let md = call(&mut c, &MetadataRequest::default(), 12).await.unwrap();
        assert_eq!(md.brokers.len(), 1);
        // PLAIN, raw, wrong password: closed without an answer.
        let mut c = connect(b.sasl_plaintext).await;
        assert_eq!(handshake(&mut c, "PLAIN", 0).await.error_code, 0);
        c.write_all(&send(b"\0plainuser\0bad".to_vec()))
            .await
            .unwrap();
        assert!(closed(&mut c).await);
        // PLAIN, raw, right password: an empty token back, then requests work.
        let mut c = connect(b.sasl_plaintext).await;
        assert_eq!(handshake(&mut c, "PLAIN", 0).await.error_code, 0);
        c.write_all(&send(b"\0plainuser\0plainpw".to_vec()))
            .await
            .unwrap();
        assert!(read_frame(&mut c).await.unwrap().is_empty());
        assert!(call(&mut c, &MetadataRequest::default(), 12).await.is_ok());
    });
}
