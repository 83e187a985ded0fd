//! TLS listeners with a real rustls client: client certificates required on the SSL listener
//! (none, expired, and signed by another CA all get no data), the mTLS principal is the
//! certificate's DN, and replacing the certificate files on disk changes what new connections
//! see while an established connection keeps working.

mod security_support;

use kafka_protocol::messages::*;
use security_support::*;

#[global_allocator]
static ALLOCATOR: fjord_broker::alloc_guard::GuardedAlloc = fjord_broker::alloc_guard::GuardedAlloc;

const FAILED: &str = "kafka_server_socket_server_metrics_failed_authentication_total";

/// Whether a TLS client with `identity` gets an ApiVersions answer from the SSL listener.
async fn gets_data(b: &TestBroker, ca: &str, identity: Option<&(String, String)>) -> bool {
    // With TLS 1.3 the client may finish its handshake before the server rejects the
    // certificate; the refusal then shows up on the first read.
    let Ok(mut t) = tls_connect(b.ssl, ca, identity).await else {
        return false;
    };
    call(&mut t, &ApiVersionsRequest::default(), 3)
        .await
        .is_ok()
}

#[test]
fn client_certificates_are_required_and_verified() {
    let pki = pki();
    let b = start_broker(&pki, &[]);
    b.rt.block_on(async {
        let ca = &pki.ca.pem;
        assert!(!gets_data(&b, ca, None).await, "no certificate");
        assert!(
            !gets_data(&b, ca, Some(&pki.expired_client)).await,
            "expired"
        );
        assert!(
            !gets_data(&b, ca, Some(&pki.foreign_client)).await,
            "other CA"
        );
        assert!(
            gets_data(&b, ca, Some(&pki.client)).await,
            "valid certificate"
        );
        // Plain TCP to a TLS port gets nothing either.
        let mut c = connect(b.ssl).await;
        assert!(call(&mut c, &ApiVersionsRequest::default(), 3)
            .await
            .is_err());
        // SASL_SSL does not ask for certificates: a client without one completes TLS.
        let mut t = tls_connect(b.sasl_ssl, ca, None).await.unwrap();
        assert!(call(&mut t, &ApiVersionsRequest::default(), 3)
            .await
            .is_ok());
        // A client that does not trust the broker's CA refuses it.
        let other = security_support::ca("unrelated");
        assert!(tls_connect(b.ssl, &other.pem, Some(&pki.client))
            .await
            .is_err());
    });
    assert!(
        b.counter(FAILED, "SSL") >= 3,
        "{}",
        b.counter(FAILED, "SSL")
    );
}

#[test]
fn mtls_principal_is_the_subject_dn() {
    let pki = pki();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(pki.client.0.as_bytes())
        .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
        .unwrap();
    assert_eq!(
        fjord_broker::auth::tls::principal_from_cert(&der).as_deref(),
        Some("User:CN=alice,OU=eng,O=Fjord")
    );
    assert_eq!(fjord_broker::auth::tls::principal_from_cert(b"junk"), None);
}

#[test]
fn requested_client_auth_accepts_clients_without_certificates() {
    let pki = pki();
    let b = start_broker(&pki, &[("listener.name.ssl.ssl.client.auth", "requested")]);
    b.rt.block_on(async {
        assert!(gets_data(&b, &pki.ca.pem, None).await);
        assert!(gets_data(&b, &pki.ca.pem, Some(&pki.client)).await);
        assert!(!gets_data(&b, &pki.ca.pem, Some(&pki.foreign_client)).await);
    });
}

#[test]
fn certificate_files_are_reloaded_for_new_connections() {
    let pki = pki();
    let b = start_broker(&pki, &[("listener.name.ssl.ssl.client.auth", "none")]);
    let server_cert = |t: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        t.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    b.rt.block_on(async {
        let mut before = tls_connect(b.ssl, &pki.ca.pem, None).await.unwrap();
        let old = server_cert(&before);
        assert!(call(&mut before, &ApiVersionsRequest::default(), 3)
            .await
            .is_ok());

        // A broken file (half-written) is ignored: new connections keep the old certificate.
        std::fs::write(&pki.keystore_path, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        let t = tls_connect(b.ssl, &pki.ca.pem, None).await.unwrap();
        assert_eq!(server_cert(&t), old);

        // A new certificate from a new CA: new connections see it and must trust the new CA.
        let ca2 = security_support::ca("rotated-ca");
        let tmp = pki.write("server.pem.new", &server_pem(&ca2, "broker-1-rotated"));
        std::fs::rename(&tmp, &pki.keystore_path).unwrap();
        let after = tls_connect(b.ssl, &ca2.pem, None).await.unwrap();
        assert_ne!(server_cert(&after), old);
        assert!(tls_connect(b.ssl, &pki.ca.pem, None).await.is_err());

        // The connection made before the rotation keeps working.
        let md = call(&mut before, &MetadataRequest::default(), 12)
            .await
            .unwrap();
        assert_eq!(md.brokers[0].port, b.ssl.port() as i32);
    });
}
