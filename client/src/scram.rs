//! The client side of SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka runs it: no
//! channel binding (`n,,`), no authorization id, no extensions.
//!
//! Sans I/O: [`ScramClient::client_first`] gives the first message, [`ScramClient::client_final`]
//! checks the server-first message (nonce extends ours, salt present, at least 4096 iterations)
//! and gives the final message with the proof, and [`ScramServerCheck::verify`] checks the
//! server signature in the server-final message in constant time, so a server that does not know
//! the credentials (or an impostor) is refused.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::ClientError;

/// Fewest iterations accepted from a server (RFC 7677, Kafka's `ScramMechanism.minIterations`).
pub const MIN_ITERATIONS: u32 = 4096;
/// Most iterations accepted from a server: Kafka's own upper bound for stored credentials. A
/// hostile server cannot make the client spin on a huge count.
pub const MAX_ITERATIONS: u32 = 16384;

/// SCRAM-SHA-256 or SCRAM-SHA-512.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            ScramMechanism::Sha256 => run::<Hmac<Sha256>>(key, data),
            ScramMechanism::Sha512 => run::<Hmac<Sha512>>(key, data),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `Hi(password, salt, i)`: PBKDF2 with the mechanism's HMAC, one output block.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
            ScramMechanism::Sha512 => {
                let mut out = vec![0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

/// A client nonce: 24 random bytes from the TLS stack's system RNG, base64 (printable ASCII,
/// never a comma).
pub fn random_nonce() -> Result<String, ClientError> {
    let mut bytes = [0u8; 24];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| ClientError::Sasl("no random numbers for the SCRAM nonce".into()))?;
    Ok(B64.encode(bytes))
}

/// SCRAM `saslname` escaping: `=` -> `=3D`, `,` -> `=2C`.
fn escape_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// One SCRAM exchange, client side.
pub struct ScramClient {
    mechanism: ScramMechanism,
    password: String,
    nonce: String,
    client_first_bare: String,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mechanism)
            .field("client_first_bare", &self.client_first_bare)
            .field("password", &"[hidden]")
            .finish()
    }
}

/// What the server-final message must carry; see [`ScramServerCheck::verify`].
pub struct ScramServerCheck {
    mechanism: ScramMechanism,
    server_signature: Vec<u8>,
}

impl std::fmt::Debug for ScramServerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServerCheck")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// An exchange for `username` with a fresh random nonce.
    pub fn new(
        mechanism: ScramMechanism,
        username: &str,
        password: &str,
    ) -> Result<ScramClient, ClientError> {
        Ok(Self::with_nonce(
            mechanism,
            username,
            password,
            random_nonce()?,
        ))
    }

    /// An exchange with a fixed client nonce (test vectors). The nonce must be printable ASCII
    /// without commas.
    pub fn with_nonce(
        mechanism: ScramMechanism,
        username: &str,
        password: &str,
        nonce: String,
    ) -> ScramClient {
        let client_first_bare = format!("n={},r={nonce}", escape_saslname(username));
        ScramClient {
            mechanism,
            password: password.to_string(),
            nonce,
            client_first_bare,
        }
    }

    /// `client-first-message`: `n,,n=<user>,r=<nonce>`.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Checks the server-first message and computes `client-final-message`; also returns what the
    /// server-final message must prove.
    pub fn client_final(
        &self,
        server_first: &[u8],
    ) -> Result<(String, ScramServerCheck), ClientError> {
        let m = self.mechanism;
        let bad = |why: String| {
            ClientError::Sasl(format!("invalid {} server-first message: {why}", m.name()))
        };
        let text = std::str::from_utf8(server_first).map_err(|_| bad("not UTF-8".into()))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ClientError::SaslAuthenticationFailed {
                mechanism: m.name().into(),
                message: format!("server error: {e}"),
            });
        }
        // server-first-message = [reserved-mext ","] nonce "," salt "," iteration-count
        //                        ["," extensions]
        let mut attrs = text.split(',');
        let mut next = |name: &str| {
            attrs
                .next()
                .and_then(|a| a.strip_prefix(name))
                .ok_or_else(|| bad(format!("expected {name}...")))
        };
        let nonce = next("r=")?;
        let salt = next("s=")?;
        let iterations = next("i=")?;
        if nonce.len() <= self.nonce.len() || !nonce.starts_with(&self.nonce) {
            return Err(bad("the nonce does not extend the client nonce".into()));
        }
        if !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(bad("the nonce is not printable".into()));
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| bad("the salt is not base64".into()))?;
        if salt.is_empty() {
            return Err(bad("empty salt".into()));
        }
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| bad(format!("iteration count '{iterations}'")))?;
        if iterations < MIN_ITERATIONS {
            return Err(bad(format!(
                "{iterations} iterations is below the minimum of {MIN_ITERATIONS}"
            )));
        }
        if iterations > MAX_ITERATIONS {
            return Err(bad(format!(
                "{iterations} iterations is above the maximum of {MAX_ITERATIONS}"
            )));
        }

        let salted = m.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        // c=biws is base64("n,,"): no channel binding, no authzid.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let client_signature = m.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = m.hmac(&salted, b"Server Key");
        let server_signature = m.hmac(&server_key, auth_message.as_bytes());
        Ok((
            format!("{without_proof},p={}", B64.encode(proof)),
            ScramServerCheck {
                mechanism: m,
                server_signature,
            },
        ))
    }
}

impl ScramServerCheck {
    /// Checks `server-final-message` (`v=<signature>`; `e=<error>` is an authentication
    /// failure). The signature is compared in constant time.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ClientError> {
        let name = self.mechanism.name();
        let text = std::str::from_utf8(server_final).unwrap_or("");
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ClientError::SaslAuthenticationFailed {
                mechanism: name.into(),
                message: format!("server error: {e}"),
            });
        }
        let v = text.split(',').next().and_then(|a| a.strip_prefix("v="));
        let got = v.and_then(|v| B64.decode(v).ok()).unwrap_or_default();
        // ct_eq on slices of different lengths is false (and the length is public).
        if bool::from(got.as_slice().ct_eq(&self.server_signature)) {
            Ok(())
        } else {
            Err(ClientError::BadServerSignature {
                mechanism: name.into(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3.
    #[test]
    fn rfc7677_sha256_vector() {
        let c = ScramClient::with_nonce(
            ScramMechanism::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(c.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let (fin, check) = c.client_final(server_first.as_bytes()).unwrap();
        assert_eq!(
            fin,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        check
            .verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        // One changed character of the signature, a truncated one, garbage, nothing.
        for bad in [
            &b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G5="[..],
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl9",
            b"v=!!",
            b"",
            b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        ] {
            assert!(
                matches!(
                    check.verify(bad),
                    Err(ClientError::BadServerSignature { ref mechanism }) if mechanism == "SCRAM-SHA-256"
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            check.verify(b"e=invalid-proof"),
            Err(ClientError::SaslAuthenticationFailed { .. })
        ));
    }

    /// SCRAM-SHA-512 with values computed independently (Python hashlib/hmac, see the test
    /// body for the recipe).
    #[test]
    fn sha512_vector() {
        // salted = hashlib.pbkdf2_hmac("sha512", b"pencil", b64decode(salt), 4096)
        // auth = "n=user,r=fyko+d2lbbFgONRv9qkxdawL,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
        //        "s=QSXCR+Q6sek8bf92,i=4096,c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j"
        // proof = HMAC(salted,"Client Key") ^ HMAC(SHA512(HMAC(salted,"Client Key")), auth)
        // signature = HMAC(HMAC(salted, "Server Key"), auth)
        let c = ScramClient::with_nonce(
            ScramMechanism::Sha512,
            "user",
            "pencil",
            "fyko+d2lbbFgONRv9qkxdawL".into(),
        );
        let (fin, check) = c
            .client_final(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
            .unwrap();
        assert_eq!(fin, SHA512_FINAL);
        check.verify(SHA512_SERVER_FINAL.as_bytes()).unwrap();
    }

    const SHA512_FINAL: &str = "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,\
        p=VdS8LkrURiej1tG6iX+fqCXQfUnBb//d9llXYaH+ylUbDwBUz9geyR9fC4TewskRUM2tlYSalhAT4Aay1Q5dTA==";
    const SHA512_SERVER_FINAL: &str = "v=14PAAuavk9hxBEkgB0brDxUhvWu+N16meYk+qxVNFqchR8QPohM09Y4Z6\
        WaTCuX4C6nqMB9KIJTDm6RpSM990g==";

    #[test]
    fn usernames_are_escaped() {
        let c = ScramClient::with_nonce(ScramMechanism::Sha512, "a=b,c", "pw", "xyz".into());
        assert_eq!(c.client_first(), "n,,n=a=3Db=2Cc,r=xyz");
    }

    #[test]
    fn random_nonces_are_printable_and_differ() {
        let a = random_nonce().unwrap();
        let b = random_nonce().unwrap();
        assert_ne!(a, b);
        assert!(a.len() >= 24);
        assert!(a.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','));
    }

    #[test]
    fn bad_server_first_messages_are_refused() {
        let c = ScramClient::with_nonce(ScramMechanism::Sha256, "user", "pencil", "abc".into());
        for (msg, want) in [
            ("r=abc,s=c2FsdA==,i=4096", "does not extend"),
            ("r=xyzabc,s=c2FsdA==,i=4096", "does not extend"),
            ("r=abcdef,s=c2FsdA==,i=4095", "below the minimum"),
            ("r=abcdef,s=c2FsdA==,i=1000000", "above the maximum"),
            ("r=abcdef,s=c2FsdA==,i=-1", "iteration count"),
            ("r=abcdef,s=!!!,i=4096", "not base64"),
            ("r=abcdef,s=,i=4096", "empty salt"),
            ("m=ext,r=abcdef,s=c2FsdA==,i=4096", "expected r="),
            ("r=abcdef,i=4096", "expected s="),
            ("r=abcdef,s=c2FsdA==", "expected i="),
            ("", "expected r="),
        ] {
            match c.client_final(msg.as_bytes()) {
                Err(ClientError::Sasl(m)) => assert!(m.contains(want), "{msg}: {m}"),
                other => panic!("{msg}: {other:?}"),
            }
        }
        assert!(matches!(
            c.client_final(b"e=other-error"),
            Err(ClientError::SaslAuthenticationFailed { .. })
        ));
        assert!(matches!(
            c.client_final(b"\xff\xfe"),
            Err(ClientError::Sasl(_))
        ));
        // Extensions after the iteration count are allowed.
        c.client_final(b"r=abcdef,s=c2FsdA==,i=4096,x=y").unwrap();
    }
}
