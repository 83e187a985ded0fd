//! SCRAM-SHA-256/512 credentials (RFC 5802, RFC 7677) as Kafka stores them.
//!
//! Admin clients send `salt`, `SaltedPassword = Hi(password, salt, i)` and `i`. The broker keeps
//! only `StoredKey = H(HMAC(SaltedPassword, "Client Key"))` and
//! `ServerKey = HMAC(SaltedPassword, "Server Key")` (plus salt and iterations): enough to verify a
//! client proof and to sign the server-final message, never enough to log in as the user.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use crate::protocol::errors::ErrorCode;

/// Kafka's lower bound for both mechanisms (`ScramMechanism.minIterations`).
pub const MIN_ITERATIONS: i32 = 4096;
/// Kafka's upper bound (`ScramControlManager.MAX_ITERATIONS`).
pub const MAX_ITERATIONS: i32 = 16384;
/// Longest salt accepted from a client. Real clients send 16-64 bytes.
pub const MAX_SALT_LEN: usize = 1024;

/// The SCRAM mechanisms Kafka knows, with its wire codes (`ScramMechanism.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The mechanism for a wire code; None for UNKNOWN (0) and anything else.
    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    pub fn code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// The SASL mechanism name, e.g. `SCRAM-SHA-256`.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// Output length of the hash, which is also the length of a salted password.
    pub fn digest_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }

    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            // HMAC takes keys of any length, so this cannot fail.
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            ScramMechanism::Sha256 => run::<Hmac<Sha256>>(key, parts),
            ScramMechanism::Sha512 => run::<Hmac<Sha512>>(key, parts),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `Hi(password, salt, i)` of RFC 5802 (PBKDF2 with one output block). Clients compute this;
    /// the broker only needs it in tests and tools.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut u = self.hmac(password, &[salt, &1u32.to_be_bytes()]);
        let mut out = u.clone();
        for _ in 1..iterations {
            u = self.hmac(password, &[&u]);
            for (o, x) in out.iter_mut().zip(&u) {
                *o ^= x;
            }
        }
        out
    }
}

/// What the broker stores for one user and mechanism.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub stored_key: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("salt", &"[hidden]")
            .field("stored_key", &"[hidden]")
            .field("server_key", &"[hidden]")
            .field("iterations", &self.iterations)
            .finish()
    }
}

impl ScramCredential {
    /// Derives the stored form from what an admin client sends. The salted password is not kept.
    pub fn derive(
        mechanism: ScramMechanism,
        salt: &[u8],
        salted_password: &[u8],
        iterations: i32,
    ) -> ScramCredential {
        let client_key = mechanism.hmac(salted_password, &[b"Client Key"]);
        ScramCredential {
            salt: salt.to_vec(),
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, &[b"Server Key"]),
            iterations,
        }
    }

    /// `ServerSignature = HMAC(ServerKey, AuthMessage)`, sent in the server-final message.
    pub fn server_signature(&self, mechanism: ScramMechanism, auth_message: &[u8]) -> Vec<u8> {
        mechanism.hmac(&self.server_key, &[auth_message])
    }

    /// Checks a client proof: `ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage)` must
    /// hash to `StoredKey`. Compares in constant time.
    pub fn verify_client_proof(
        &self,
        mechanism: ScramMechanism,
        auth_message: &[u8],
        proof: &[u8],
    ) -> bool {
        if proof.len() != mechanism.digest_len() {
            return false;
        }
        let signature = mechanism.hmac(&self.stored_key, &[auth_message]);
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let candidate = mechanism.hash(&client_key);
        candidate.len() == self.stored_key.len()
            && candidate
                .iter()
                .zip(&self.stored_key)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Why an upsertion is refused; the message goes to the client with [`UpsertionError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpsertionError {
    #[error(
        "Too few iterations: {iterations} is below the minimum of {} for {name}",
        MIN_ITERATIONS
    )]
    TooFewIterations { iterations: i32, name: &'static str },
    #[error(
        "Too many iterations: {iterations} is above the maximum of {} for {name}",
        MAX_ITERATIONS
    )]
    TooManyIterations { iterations: i32, name: &'static str },
    #[error("Salt must not be empty")]
    EmptySalt,
    #[error("Salt of {0} bytes is longer than the maximum of {max}", max = MAX_SALT_LEN)]
    SaltTooLong(usize),
    #[error("Salted password must be {expected} bytes for {name}, got {got}")]
    SaltedPasswordLength {
        expected: usize,
        got: usize,
        name: &'static str,
    },
}

impl UpsertionError {
    /// All refusals are UNACCEPTABLE_CREDENTIAL, as in Kafka.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::UnacceptableCredential
    }
}

/// Checks an upsertion's parameters against the mechanism and the limits.
pub fn validate_upsertion(
    mechanism: ScramMechanism,
    iterations: i32,
    salt: &[u8],
    salted_password: &[u8],
) -> Result<(), UpsertionError> {
    let name = mechanism.name();
    if iterations < MIN_ITERATIONS {
        return Err(UpsertionError::TooFewIterations { iterations, name });
    }
    if iterations > MAX_ITERATIONS {
        return Err(UpsertionError::TooManyIterations { iterations, name });
    }
    if salt.is_empty() {
        return Err(UpsertionError::EmptySalt);
    }
    if salt.len() > MAX_SALT_LEN {
        return Err(UpsertionError::SaltTooLong(salt.len()));
    }
    if salted_password.len() != mechanism.digest_len() {
        return Err(UpsertionError::SaltedPasswordLength {
            expected: mechanism.digest_len(),
            got: salted_password.len(),
            name,
        });
    }
    Ok(())
}

/// Byte strings as lowercase hex in the JSON metadata log.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() % 2 != 0 || !text.is_ascii() {
            return Err(serde::de::Error::custom("hex string of odd length"));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;

    // RFC 7677 section 3: user "user", password "pencil".
    const CLIENT_FIRST_BARE: &str = "n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL_NO_PROOF: &str =
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const PROOF: &str = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_SIGNATURE: &str = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc7677_credential() -> ScramCredential {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = ScramMechanism::Sha256.salted_password(b"pencil", &salt, 4096);
        ScramCredential::derive(ScramMechanism::Sha256, &salt, &salted, 4096)
    }

    fn auth_message() -> String {
        format!("{CLIENT_FIRST_BARE},{SERVER_FIRST},{CLIENT_FINAL_NO_PROOF}")
    }

    #[test]
    fn rfc7677_server_signature() {
        let cred = rfc7677_credential();
        let sig = cred.server_signature(ScramMechanism::Sha256, auth_message().as_bytes());
        assert_eq!(B64.encode(sig), SERVER_SIGNATURE);
    }

    #[test]
    fn rfc7677_client_proof_verifies_against_stored_key() {
        let cred = rfc7677_credential();
        let proof = B64.decode(PROOF).unwrap();
        let msg = auth_message();
        assert!(cred.verify_client_proof(ScramMechanism::Sha256, msg.as_bytes(), &proof));
        let mut bad = proof.clone();
        bad[0] ^= 1;
        assert!(!cred.verify_client_proof(ScramMechanism::Sha256, msg.as_bytes(), &bad));
        assert!(!cred.verify_client_proof(ScramMechanism::Sha256, b"other message", &proof));
        assert!(!cred.verify_client_proof(ScramMechanism::Sha256, msg.as_bytes(), &proof[..31]));
    }

    #[test]
    fn sha512_matches_independent_reference() {
        // Computed with Python's hashlib.pbkdf2_hmac / hmac / hashlib (not this code):
        // salted = pbkdf2_hmac("sha512", b"pencil", salt, 4096)
        // stored = sha512(hmac(salted, b"Client Key")); server = hmac(salted, b"Server Key")
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = ScramMechanism::Sha512.salted_password(b"pencil", &salt, 4096);
        let cred = ScramCredential::derive(ScramMechanism::Sha512, &salt, &salted, 4096);
        assert_eq!(B64.encode(&cred.stored_key), SHA512_STORED_KEY);
        assert_eq!(B64.encode(&cred.server_key), SHA512_SERVER_KEY);
        assert_eq!(cred.stored_key.len(), 64);
    }

    const SHA512_STORED_KEY: &str =
        "6AAub3065EYRmyFpM2RNwqK+eGnrkYuEWbXn19LsEmBqzu8QaCXNc1FwpnX9NhH2hK/60dzj9DoO5DvVkOHbvg==";
    const SHA512_SERVER_KEY: &str =
        "jZHbYjC1aHh0/hKbxyBuGFjDrgjgKTT1esA7awWiKcRZ0o/0b1yWEebBeSVkkCFewf91nLDfKF24mvD5nmE6rA==";

    #[test]
    fn never_keeps_the_salted_password() {
        let salt = [7u8; 16];
        let salted = ScramMechanism::Sha256.salted_password(b"secret", &salt, 4096);
        let cred = ScramCredential::derive(ScramMechanism::Sha256, &salt, &salted, 4096);
        let json = serde_json::to_string(&cred).unwrap();
        let salted_hex: String = salted.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!json.contains(&salted_hex));
        assert!(!format!("{cred:?}").contains("stored_key: ["));
        let back: ScramCredential = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cred);
    }

    #[test]
    fn upsertion_bounds() {
        let m = ScramMechanism::Sha512;
        let sp = [0u8; 64];
        assert!(validate_upsertion(m, 4096, b"s", &sp).is_ok());
        assert!(validate_upsertion(m, 16384, b"s", &sp).is_ok());
        assert_eq!(
            validate_upsertion(m, 4095, b"s", &sp)
                .unwrap_err()
                .to_string(),
            "Too few iterations: 4095 is below the minimum of 4096 for SCRAM-SHA-512"
        );
        assert_eq!(
            validate_upsertion(m, 16385, b"s", &sp)
                .unwrap_err()
                .to_string(),
            "Too many iterations: 16385 is above the maximum of 16384 for SCRAM-SHA-512"
        );
        assert_eq!(
            validate_upsertion(m, 8192, b"s", &sp[..32])
                .unwrap_err()
                .to_string(),
            "Salted password must be 64 bytes for SCRAM-SHA-512, got 32"
        );
        assert!(validate_upsertion(m, i32::MIN, b"s", &sp).is_err());
        assert!(validate_upsertion(m, 8192, b"", &sp).is_err());
        assert!(validate_upsertion(m, 8192, &[1; 1025], &sp).is_err());
        assert!(validate_upsertion(m, 8192, b"s", &sp[..32]).is_err());
        assert!(validate_upsertion(ScramMechanism::Sha256, 8192, b"s", &sp[..32]).is_ok());
        assert_eq!(ScramMechanism::from_code(0), None);
        assert_eq!(ScramMechanism::from_code(3), None);
        assert_eq!(ScramMechanism::from_code(-1), None);
        assert_eq!(ScramMechanism::from_code(2), Some(m));
    }
}
