//! fjord-client's secure connections against an in-process broker: SASL_SSL with SCRAM-SHA-512
//! and SCRAM-SHA-256 configured from Kafka client properties, wrong passwords and unknown users
//! (SASL_AUTHENTICATION_FAILED), PLAIN over SASL_PLAINTEXT, a mechanism the listener does not
//! enable, mTLS on an SSL listener that requires client certificates, and TLS failures (untrusted
//! CA, wrong server name, no client certificate).

mod security_support;

use fjord_client::{
    ClientCertificate, ClientError, ClientSecurity, Connection, PemSource, SaslMechanism,
    SaslSettings, SecurityProtocol, TlsSettings,
};
use kafka_protocol::messages::*;
use security_support::*;

#[global_allocator]
static ALLOCATOR: fjord_broker::alloc_guard::GuardedAlloc = fjord_broker::alloc_guard::GuardedAlloc;

const FAILED: &str = "kafka_server_socket_server_metrics_failed_authentication_total";
const OK: &str = "kafka_server_socket_server_metrics_successful_authentication_total";

fn jaas(module: &str, user: &str, password: &str) -> String {
    format!(
        "org.apache.kafka.common.security.{module} required username=\"{user}\" password=\"{password}\";"
    )
}

fn scram_ssl_props(pki: &Pki, mechanism: &str, user: &str, password: &str) -> ClientSecurity {
    let ca = path_str(&pki.ca_path);
    ClientSecurity::from_properties([
        ("bootstrap.servers", "ignored:9092"),
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", mechanism),
        (
            "sasl.jaas.config",
            &jaas("scram.ScramLoginModule", user, password),
        ),
        ("ssl.ca.location", &ca),
    ])
    .unwrap()
}

/// ApiVersions and Metadata on an established connection; returns the port Metadata reports for
/// the broker (the listener the request arrived on).
async fn api_versions_and_metadata(c: &mut Connection) -> i32 {
    let v = c.send(&ApiVersionsRequest::default(), 3).await.unwrap();
    assert_eq!(v.error_code, 0);
    assert!(v
        .api_keys
        .iter()
        .any(|k| k.api_key == 3 && k.max_version >= 12));
    let md = c.send(&MetadataRequest::default(), 12).await.unwrap();
    assert_eq!(md.brokers.len(), 1);
    md.brokers[0].port
}

fn expect_auth_failure(r: Result<Connection, ClientError>, mechanism: &str) {
    match r {
        Err(ClientError::SaslAuthenticationFailed {
            mechanism: m,
            message,
        }) => {
            assert_eq!(m, mechanism);
            assert!(message.contains("invalid credentials"), "{message}");
        }
        Err(e) => panic!("expected SaslAuthenticationFailed, got {e}"),
        Ok(_) => panic!("authenticated with wrong credentials"),
    }
}

#[test]
fn sasl_ssl_scram_and_sasl_plaintext_plain() {
    let pki = pki();
    let b = start_broker(
        &pki,
        &[(
            "listener.name.sasl_ssl.sasl.enabled.mechanisms",
            "SCRAM-SHA-512,SCRAM-SHA-256",
        )],
    );
    b.create_user("alice", "alice-secret");
    let port = b.sasl_ssl.port();
    b.rt.block_on(async {
        // SCRAM-SHA-512 over SASL_SSL, by host name (certificate SAN "localhost") and by IP
        // address (SAN 127.0.0.1).
        let sec = scram_ssl_props(&pki, "SCRAM-SHA-512", "alice", "alice-secret");
        assert_eq!(sec.protocol(), SecurityProtocol::SaslSsl);
        let mut c = Connection::connect_with(("localhost", port), &sec)
            .await
            .unwrap();
        assert_eq!(api_versions_and_metadata(&mut c).await, port as i32);
        let mut c = Connection::connect_with(b.sasl_ssl, &sec).await.unwrap();
        assert_eq!(api_versions_and_metadata(&mut c).await, port as i32);
        // SCRAM-SHA-256, address as a "host:port" string.
        let sec256 = scram_ssl_props(&pki, "SCRAM-SHA-256", "alice", "alice-secret");
        let mut c = Connection::connect_with(format!("localhost:{port}"), &sec256)
            .await
            .unwrap();
        assert_eq!(api_versions_and_metadata(&mut c).await, port as i32);

        // Wrong password and unknown user: SASL_AUTHENTICATION_FAILED, the same error.
        for (m, user, pw) in [
            ("SCRAM-SHA-512", "alice", "wrong"),
            ("SCRAM-SHA-512", "mallory", "alice-secret"),
            ("SCRAM-SHA-256", "alice", "alice-secret "),
        ] {
            let sec = scram_ssl_props(&pki, m, user, pw);
            expect_auth_failure(Connection::connect_with(b.sasl_ssl, &sec).await, m);
        }

        // PLAIN is not enabled on the SASL_SSL listener.
        let plain_ssl = ClientSecurity::sasl_ssl(
            TlsSettings::with_ca_file(&pki.ca_path),
            SaslSettings::new(SaslMechanism::Plain, "plainuser", "plainpw"),
        );
        match Connection::connect_with(b.sasl_ssl, &plain_ssl).await {
            Err(ClientError::UnsupportedSaslMechanism { mechanism, enabled }) => {
                assert_eq!(mechanism, "PLAIN");
                let mut enabled = enabled;
                enabled.sort();
                assert_eq!(enabled, vec!["SCRAM-SHA-256", "SCRAM-SHA-512"]);
            }
            Err(e) => panic!("expected UnsupportedSaslMechanism, got {e}"),
            Ok(_) => panic!("PLAIN accepted on a listener without it"),
        }

        // PLAIN over SASL_PLAINTEXT (enabled there), librdkafka-style keys.
        let plain = ClientSecurity::from_properties([
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanisms", "PLAIN"),
            ("sasl.username", "plainuser"),
            ("sasl.password", "plainpw"),
        ])
        .unwrap();
        assert_eq!(plain.tls, None);
        let mut c = Connection::connect_with(b.sasl_plaintext, &plain)
            .await
            .unwrap();
        assert_eq!(
            api_versions_and_metadata(&mut c).await,
            b.sasl_plaintext.port() as i32
        );
        let bad_plain = ClientSecurity::sasl_plaintext(SaslSettings::new(
            SaslMechanism::Plain,
            "plainuser",
            "nope",
        ));
        expect_auth_failure(
            Connection::connect_with(b.sasl_plaintext, &bad_plain).await,
            "PLAIN",
        );
        // SCRAM over SASL_PLAINTEXT too, with the JAAS config.
        let scram_plaintext = ClientSecurity::from_properties([
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            (
                "sasl.jaas.config",
                &jaas("scram.ScramLoginModule", "alice", "alice-secret"),
            ),
        ])
        .unwrap();
        let mut c = Connection::connect_with(b.sasl_plaintext, &scram_plaintext)
            .await
            .unwrap();
        assert_eq!(
            api_versions_and_metadata(&mut c).await,
            b.sasl_plaintext.port() as i32
        );

        // SASL against a listener without SASL: ILLEGAL_SASL_STATE, reported as such.
        match Connection::connect_with(b.plaintext, &plain).await {
            Err(ClientError::Sasl(m)) => assert!(m.contains("ILLEGAL_SASL_STATE"), "{m}"),
            Err(e) => panic!("expected a SASL error, got {e}"),
            Ok(_) => panic!("SASL accepted on a PLAINTEXT listener"),
        }
        // SASL_SSL settings against the SASL_PLAINTEXT port: the TLS handshake fails.
        match Connection::connect_with(b.sasl_plaintext, &sec).await {
            Err(ClientError::Tls(_)) => {}
            Err(e) => panic!("expected a TLS error, got {e}"),
            Ok(_) => panic!("TLS to a plaintext port succeeded"),
        }
    });
    // 3 SCRAM logins over SASL_SSL, 2 over SASL_PLAINTEXT. Failures: 3 wrong credentials and
    // the refused mechanism on SASL_SSL, the wrong PLAIN password on SASL_PLAINTEXT.
    assert_eq!(b.counter(OK, "SASL_SSL"), 3);
    assert_eq!(b.counter(FAILED, "SASL_SSL"), 4);
    assert_eq!(b.counter(OK, "SASL_PLAINTEXT"), 2);
    assert_eq!(b.counter(FAILED, "SASL_PLAINTEXT"), 1);
}

#[test]
fn mtls_and_tls_failures() {
    let pki = pki();
    let b = start_broker(&pki, &[]);
    let cert = pki.write("client.pem", &pki.client.0);
    let key = pki.write("client.key", &pki.client.1);
    let port = b.ssl.port();
    b.rt.block_on(async {
        // mTLS from properties: SSL listener requiring client certificates.
        let mtls = ClientSecurity::from_properties([
            ("security.protocol", "SSL"),
            ("ssl.ca.location", &path_str(&pki.ca_path)),
            ("ssl.certificate.location", &path_str(&cert)),
            ("ssl.key.location", &path_str(&key)),
        ])
        .unwrap();
        assert_eq!(mtls.protocol(), SecurityProtocol::Ssl);
        let mut c = Connection::connect_with(("localhost", port), &mtls)
            .await
            .unwrap();
        assert_eq!(api_versions_and_metadata(&mut c).await, port as i32);
        // The same with inline PEM.
        let inline = ClientSecurity::ssl(TlsSettings {
            ca: Some(PemSource::Pem(pki.ca.pem.clone())),
            client_cert: Some(ClientCertificate {
                cert_chain: PemSource::Pem(pki.client.0.clone()),
                key: PemSource::Pem(pki.client.1.clone()),
            }),
            ..TlsSettings::default()
        });
        let mut c = Connection::connect_with(b.ssl, &inline).await.unwrap();
        assert_eq!(api_versions_and_metadata(&mut c).await, port as i32);

        // Without a client certificate the broker refuses (during the handshake with TLS 1.2,
        // on the first request with TLS 1.3): a TLS error either way, never data.
        let no_cert = ClientSecurity::ssl(TlsSettings::with_ca_file(&pki.ca_path));
        let r = match Connection::connect_with(b.ssl, &no_cert).await {
            Ok(mut c) => c.send(&ApiVersionsRequest::default(), 3).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match r {
            Err(ClientError::Tls(m)) => assert!(m.to_lowercase().contains("certificate"), "{m}"),
            Err(e) => panic!("expected a TLS error, got {e}"),
            Ok(()) => panic!("the SSL listener answered a client without a certificate"),
        }
        // An expired client certificate is refused too.
        let expired = ClientSecurity::ssl(TlsSettings {
            client_cert: Some(ClientCertificate {
                cert_chain: PemSource::Pem(pki.expired_client.0.clone()),
                key: PemSource::Pem(pki.expired_client.1.clone()),
            }),
            ..TlsSettings::with_ca_file(&pki.ca_path)
        });
        let r = match Connection::connect_with(b.ssl, &expired).await {
            Ok(mut c) => c.send(&ApiVersionsRequest::default(), 3).await.map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(matches!(r, Err(ClientError::Tls(_))), "{r:?}");

        // A client that does not trust the broker's CA refuses the broker.
        let other = security_support::ca("unrelated");
        let untrusted = ClientSecurity::ssl(TlsSettings {
            ca: Some(PemSource::Pem(other.pem.clone())),
            ..TlsSettings::default()
        });
        match Connection::connect_with(b.sasl_ssl, &untrusted).await {
            Err(ClientError::Tls(m)) => assert!(m.contains("UnknownIssuer"), "{m}"),
            Err(e) => panic!("expected a TLS error, got {e}"),
            Ok(_) => panic!("an untrusted broker certificate was accepted"),
        }

        // A server name the certificate is not valid for: refused, unless hostname
        // verification is off (`ssl.endpoint.identification.algorithm=none`).
        let mut named = TlsSettings::with_ca_file(&pki.ca_path);
        named.server_name = Some("broker.elsewhere.example".into());
        match Connection::connect_with(b.sasl_ssl, &ClientSecurity::ssl(named.clone())).await {
            Err(ClientError::Tls(m)) => assert!(m.contains("not valid for name"), "{m}"),
            Err(e) => panic!("expected a TLS error, got {e}"),
            Ok(_) => panic!("a certificate for another name was accepted"),
        }
        named.verify_hostname = false;
        let mut c = Connection::connect_with(b.sasl_ssl, &ClientSecurity::ssl(named))
            .await
            .unwrap();
        let v = c.send(&ApiVersionsRequest::default(), 3).await.unwrap();
        assert_eq!(v.error_code, 0);
        // ... but the chain is still verified with hostname verification off.
        let untrusted_any_name = ClientSecurity::ssl(TlsSettings {
            ca: Some(PemSource::Pem(other.pem.clone())),
            verify_hostname: false,
            ..TlsSettings::default()
        });
        assert!(matches!(
            Connection::connect_with(b.sasl_ssl, &untrusted_any_name).await,
            Err(ClientError::Tls(_))
        ));

        // An unreadable CA file fails before connecting, naming the file.
        let missing = ClientSecurity::ssl(TlsSettings::with_ca_file("/nonexistent/ca.pem"));
        match Connection::connect_with(b.ssl, &missing).await {
            Err(ClientError::Tls(m)) => assert!(m.contains("/nonexistent/ca.pem"), "{m}"),
            Err(e) => panic!("expected a TLS error, got {e}"),
            Ok(_) => panic!("connected without a CA"),
        }
    });
    assert!(
        b.counter(FAILED, "SSL") >= 2,
        "{}",
        b.counter(FAILED, "SSL")
    );
}
