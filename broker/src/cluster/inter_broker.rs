//! How this broker connects to other brokers (followers fetching from leaders): the security
//! of `inter.broker.listener.name` as a client sees it. TLS uses the listener's own truststore
//! to verify the peer (and its keystore as the client certificate when the listener asks
//! clients for one); SASL uses `sasl.mechanism.inter.broker.protocol` with the credentials of
//! `listener.name.<listener>.<mechanism>.sasl.jaas.config` (or `sasl.jaas.config`), as Kafka
//! brokers do. The principal needs CLUSTER_ACTION (usually a super user).

use std::collections::BTreeMap;

use fjord_client::{ClientCertificate, ClientSecurity, PemSource, SaslSettings, TlsSettings};

use crate::auth::tls::ClientAuth;
use crate::config::{Config, ConfigError};

/// The security protocol `listener` is mapped to (its name when there is no mapping).
pub fn protocol_of(raw: &BTreeMap<String, String>, listener: &str) -> String {
    raw.get("listener.security.protocol.map")
        .and_then(|map| {
            map.split(',')
                .filter_map(|e| e.trim().split_once(':'))
                .find(|(name, _)| name.trim() == listener)
                .map(|(_, p)| p.trim().to_uppercase())
        })
        .unwrap_or_else(|| listener.to_uppercase())
}

/// The SASL credentials for the inter-broker listener, when it uses SASL (validated at load).
pub fn sasl_settings(
    raw: &BTreeMap<String, String>,
    listener: &str,
) -> Result<Option<SaslSettings>, ConfigError> {
    if !protocol_of(raw, listener).starts_with("SASL_") {
        return Ok(None);
    }
    const KEY: &str = "sasl.mechanism.inter.broker.protocol";
    let bad = |reason: String| ConfigError {
        key: KEY.into(),
        reason,
    };
    let mechanism = raw
        .get(KEY)
        .map(|m| m.trim().to_uppercase())
        .ok_or_else(|| {
            bad(format!(
                "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512: the inter-broker listener '{listener}' uses SASL"
            ))
        })?;
    let jaas_key = format!(
        "listener.name.{}.{}.sasl.jaas.config",
        listener.to_lowercase(),
        mechanism.to_lowercase()
    );
    let jaas = raw
        .get(&jaas_key)
        .or_else(|| raw.get("sasl.jaas.config"))
        .ok_or_else(|| ConfigError {
            key: jaas_key.clone(),
            reason: "the inter-broker listener uses SASL: set this broker's credentials (or sasl.jaas.config)".into(),
        })?;
    let props = [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", mechanism.as_str()),
        ("sasl.jaas.config", jaas.as_str()),
    ];
    let security = ClientSecurity::from_properties(props).map_err(|e| ConfigError {
        key: jaas_key,
        reason: e.to_string(),
    })?;
    Ok(security.sasl)
}

fn pem(source: &crate::auth::tls::PemSource) -> PemSource {
    match source {
        crate::auth::tls::PemSource::File(p) => PemSource::File(p.clone()),
        crate::auth::tls::PemSource::Inline(t) => PemSource::Pem(t.clone()),
    }
}

/// What a follower uses to connect to a leader.
pub fn client_security(config: &Config) -> ClientSecurity {
    let listener = &config.cluster.inter_broker_listener;
    let tls = config
        .listener_security
        .iter()
        .find(|l| &l.name == listener)
        .and_then(|l| l.tls.as_ref())
        .map(|t| TlsSettings {
            ca: t.truststore.as_ref().map(pem),
            client_cert: (t.client_auth != ClientAuth::None).then(|| ClientCertificate {
                cert_chain: pem(&t.cert_chain),
                key: pem(&t.key),
            }),
            server_name: None,
            verify_hostname: config
                .raw
                .get("ssl.endpoint.identification.algorithm")
                .is_none_or(|v| v.eq_ignore_ascii_case("https")),
        });
    ClientSecurity {
        tls,
        sasl: config.cluster.inter_broker_sasl.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sasl_credentials_come_from_the_listener_jaas_key() {
        let r = raw(&[
            ("listener.security.protocol.map", "SECURE:SASL_SSL,CONTROLLER:PLAINTEXT"),
            ("sasl.mechanism.inter.broker.protocol", "SCRAM-SHA-512"),
            (
                "listener.name.secure.scram-sha-512.sasl.jaas.config",
                "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"broker\" password=\"s3cret\";",
            ),
        ]);
        let s = sasl_settings(&r, "SECURE").unwrap().unwrap();
        assert_eq!(
            (s.username.as_str(), s.password.as_str()),
            ("broker", "s3cret")
        );
        assert_eq!(sasl_settings(&r, "CONTROLLER").unwrap(), None);
    }

    #[test]
    fn missing_mechanism_or_credentials_are_named() {
        let r = raw(&[("listener.security.protocol.map", "SECURE:SASL_SSL")]);
        assert_eq!(
            sasl_settings(&r, "SECURE").unwrap_err().key,
            "sasl.mechanism.inter.broker.protocol"
        );
        let r = raw(&[
            ("listener.security.protocol.map", "SECURE:SASL_SSL"),
            ("sasl.mechanism.inter.broker.protocol", "PLAIN"),
        ]);
        assert_eq!(
            sasl_settings(&r, "SECURE").unwrap_err().key,
            "listener.name.secure.plain.sasl.jaas.config"
        );
    }
}
