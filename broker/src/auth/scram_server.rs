//! The server side of a SCRAM-SHA-256/512 exchange (RFC 5802, RFC 7677) as Kafka runs it:
//! client-first -> server-first -> client-final -> server-final, no channel binding.
//!
//! Checks: the GS2 header is `n,,` or `y,,` (or carries an authzid equal to the user), the
//! client-final `c=` is exactly the base64 of that header (`biws` for `n,,`), its nonce equals the
//! client nonce followed by ours, and the proof verifies against the stored key (constant time).
//! Unknown users get a plausible server-first message with a per-process fake salt and fail at
//! the proof, exactly like a wrong password, so the exchange does not reveal which users exist.
//! Every malformed message is a failure value, never a panic.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::scram::{ScramCredential, ScramMechanism, MIN_ITERATIONS};

/// Result of feeding one client message to the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge and wait for the next client message.
    Challenge(Vec<u8>),
    /// Authenticated as `user`; send `response` (the server-final message).
    Success { user: String, response: Vec<u8> },
    /// Authentication failed; the reason is for logs only (never contains secrets).
    Failure(String),
}

enum State {
    ClientFirst,
    ClientFinal {
        user: String,
        credential: Option<ScramCredential>,
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

/// One connection's SCRAM exchange.
pub struct ScramServer {
    mechanism: ScramMechanism,
    state: State,
    /// Server nonce part (tests fix it; real exchanges use a random one).
    server_nonce: String,
}

/// A server nonce: 24 random bytes, base64 (printable, never contains ',').
pub fn random_nonce() -> String {
    let mut bytes = [0u8; 24];
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    bytes[..16].copy_from_slice(a.as_bytes());
    bytes[16..].copy_from_slice(&b.as_bytes()[..8]);
    B64.encode(bytes)
}

/// Per-process secret for the fake salts of unknown users.
fn fake_salt_key() -> &'static [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        k[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        k[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        k
    })
}

/// A credential no password matches, with a salt that is stable for `user` within this process.
fn fake_credential(mechanism: ScramMechanism, user: &str) -> ScramCredential {
    let seed = ScramCredential::derive(mechanism, user.as_bytes(), fake_salt_key(), 1);
    let len = mechanism.digest_len();
    ScramCredential {
        salt: seed.server_key[..16].to_vec(),
        stored_key: vec![0u8; len],
        server_key: vec![0u8; len],
        iterations: MIN_ITERATIONS,
    }
}

/// Decodes a SCRAM `saslname` (`=2C` -> `,`, `=3D` -> `=`; any other `=` is invalid).
fn decode_saslname(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3)?;
        match esc {
            "=2C" => out.push(','),
            "=3D" => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

impl ScramServer {
    pub fn new(mechanism: ScramMechanism) -> ScramServer {
        Self::with_nonce(mechanism, random_nonce())
    }

    /// A server with a fixed nonce part (RFC test vectors).
    pub fn with_nonce(mechanism: ScramMechanism, server_nonce: String) -> ScramServer {
        ScramServer {
            mechanism,
            state: State::ClientFirst,
            server_nonce,
        }
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// Feeds the next client message. `lookup` finds a user's stored credential.
    pub fn step(
        &mut self,
        message: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Step {
        let state = std::mem::replace(&mut self.state, State::Done);
        let Ok(text) = std::str::from_utf8(message) else {
            return Step::Failure("SCRAM message is not UTF-8".into());
        };
        match state {
            State::ClientFirst => self.client_first(text, lookup),
            State::ClientFinal {
                user,
                credential,
                gs2_header,
                client_first_bare,
                server_first,
                nonce,
            } => self.client_final(
                text,
                &user,
                credential,
                &gs2_header,
                &client_first_bare,
                &server_first,
                &nonce,
            ),
            State::Done => Step::Failure("SCRAM exchange already finished".into()),
        }
    }

    fn client_first(
        &mut self,
        text: &str,
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Step {
        let fail = |why: &str| Step::Failure(format!("invalid SCRAM client-first message: {why}"));
        // gs2-header = cbind-flag "," [authzid] ","
        let Some((flag, rest)) = text.split_once(',') else {
            return fail("no GS2 header");
        };
        if flag != "n" && flag != "y" {
            return fail("channel binding is not supported");
        }
        let Some((authzid, bare)) = rest.split_once(',') else {
            return fail("no GS2 header");
        };
        let gs2_header = format!("{flag},{authzid},");
        let mut parts = bare.split(',');
        let (Some(user_attr), Some(nonce_attr)) = (parts.next(), parts.next()) else {
            return fail("missing username or nonce");
        };
        for ext in parts {
            // Kafka's only extension is delegation-token auth, which this broker does not issue.
            if ext.eq_ignore_ascii_case("tokenauth=true") {
                return fail("delegation tokens are not supported");
            }
            if !ext.contains('=') {
                return fail("malformed extension");
            }
        }
        let Some(user) = user_attr.strip_prefix("n=").and_then(decode_saslname) else {
            return fail("malformed username");
        };
        if user.is_empty() {
            return fail("empty username");
        }
        if !authzid.is_empty() {
            match authzid.strip_prefix("a=").and_then(decode_saslname) {
                Some(a) if a == user => {}
                _ => return fail("authorization id differs from the username"),
            }
        }
        let Some(client_nonce) = nonce_attr.strip_prefix("r=") else {
            return fail("missing nonce");
        };
        if !valid_nonce(client_nonce) {
            return fail("malformed nonce");
        }
        let credential = lookup(&user);
        let shown = credential
            .clone()
            .unwrap_or_else(|| fake_credential(self.mechanism, &user));
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&shown.salt),
            shown.iterations
        );
        let challenge = server_first.clone().into_bytes();
        self.state = State::ClientFinal {
            user,
            credential,
            gs2_header,
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
        };
        Step::Challenge(challenge)
    }

    #[allow(clippy::too_many_arguments)]
    fn client_final(
        &mut self,
        text: &str,
        user: &str,
        credential: Option<ScramCredential>,
        gs2_header: &str,
        client_first_bare: &str,
        server_first: &str,
        nonce: &str,
    ) -> Step {
        let fail = |why: &str| Step::Failure(format!("invalid SCRAM client-final message: {why}"));
        let Some((without_proof, proof_b64)) = text.rsplit_once(",p=") else {
            return fail("missing proof");
        };
        let mut parts = without_proof.split(',');
        let (Some(cbind), Some(nonce_attr)) = (parts.next(), parts.next()) else {
            return fail("missing channel binding or nonce");
        };
        if cbind.strip_prefix("c=") != Some(B64.encode(gs2_header).as_str()) {
            return fail("channel binding does not match the GS2 header");
        }
        let Some(got_nonce) = nonce_attr.strip_prefix("r=") else {
            return fail("missing nonce");
        };
        // Equal to client nonce + server nonce (which also means it starts with the client's).
        if got_nonce != nonce {
            return fail("nonce mismatch");
        }
        if parts.any(|p| !p.contains('=')) {
            return fail("malformed extension");
        }
        let Ok(proof) = B64.decode(proof_b64) else {
            return fail("proof is not base64");
        };
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let known = credential.is_some();
        let cred = credential.unwrap_or_else(|| fake_credential(self.mechanism, user));
        // Verify even for unknown users so both paths cost the same.
        let ok = cred.verify_client_proof(self.mechanism, auth_message.as_bytes(), &proof);
        if !(ok && known) {
            return Step::Failure(if known {
                "invalid client proof".into()
            } else {
                "unknown user".into()
            });
        }
        let signature = cred.server_signature(self.mechanism, auth_message.as_bytes());
        Step::Success {
            user: user.to_string(),
            response: format!("v={}", B64.encode(signature)).into_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 section 3: user "user", password "pencil".
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn cred() -> ScramCredential {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = ScramMechanism::Sha256.salted_password(b"pencil", &salt, 4096);
        ScramCredential::derive(ScramMechanism::Sha256, &salt, &salted, 4096)
    }

    fn server() -> ScramServer {
        ScramServer::with_nonce(ScramMechanism::Sha256, SERVER_NONCE.into())
    }

    fn lookup(u: &str) -> Option<ScramCredential> {
        (u == "user").then(cred)
    }

    fn is_failure(s: &Step) -> bool {
        matches!(s, Step::Failure(_))
    }

    #[test]
    fn rfc7677_end_to_end() {
        let mut s = server();
        assert_eq!(
            s.step(CLIENT_FIRST.as_bytes(), lookup),
            Step::Challenge(SERVER_FIRST.as_bytes().to_vec())
        );
        assert_eq!(
            s.step(CLIENT_FINAL.as_bytes(), lookup),
            Step::Success {
                user: "user".into(),
                response: SERVER_FINAL.as_bytes().to_vec()
            }
        );
        // Anything after the end (a replayed client-final) fails.
        assert!(is_failure(&s.step(CLIENT_FINAL.as_bytes(), lookup)));
    }

    #[test]
    fn wrong_proof_and_unknown_user_fail_alike() {
        let mut s = server();
        s.step(CLIENT_FIRST.as_bytes(), lookup);
        let bad = CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
        assert!(is_failure(&s.step(bad.as_bytes(), lookup)));

        let mut s = server();
        let Step::Challenge(first) = s.step(b"n,,n=nobody,r=abc", lookup) else {
            panic!("unknown users get a challenge")
        };
        let first = String::from_utf8(first).unwrap();
        assert!(first.starts_with(&format!("r=abc{SERVER_NONCE},s=")));
        assert!(first.ends_with(",i=4096"));
        // The fake salt is stable per user, so probing twice reveals nothing.
        let mut again = server();
        assert_eq!(
            again.step(b"n,,n=nobody,r=abc", lookup),
            Step::Challenge(first.into_bytes())
        );
        let fin =
            format!("c=biws,r=abc{SERVER_NONCE},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert_eq!(
            s.step(fin.as_bytes(), lookup),
            Step::Failure("unknown user".into())
        );
    }

    #[test]
    fn nonce_and_channel_binding_checks() {
        let cases = [
            // Nonce without the server part, with a different server part, and extended.
            CLIENT_FINAL.replace("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", ""),
            CLIENT_FINAL.replace("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", "%other"),
            CLIENT_FINAL.replace("hNlF$k0,", "hNlF$k0x,"),
            CLIENT_FINAL.replace("r=rOpr", "r=XOpr"),
            CLIENT_FINAL.replace("c=biws", "c=eSws"),
            CLIENT_FINAL.replace("c=biws", "c=cD10bHMtdW5pcXVlLCw="),
            CLIENT_FINAL.replace(",p=", ",x="),
            CLIENT_FINAL.replace("p=dHzb", "p=!!!"),
        ];
        for c in cases {
            let mut s = server();
            assert!(matches!(
                s.step(CLIENT_FIRST.as_bytes(), lookup),
                Step::Challenge(_)
            ));
            assert!(is_failure(&s.step(c.as_bytes(), lookup)), "{c}");
        }
    }

    #[test]
    fn malformed_client_first_messages_fail() {
        let long = format!("n,,n={},r=x", "a".repeat(100_000));
        let cases: Vec<&[u8]> = vec![
            b"",
            b"\xff\xfe",
            b"n",
            b"n,",
            b"n,,",
            b"n,,n=user",
            b"n,,r=abc,n=user",
            b"p=tls-unique,,n=user,r=abc",
            b"x,,n=user,r=abc",
            b"n,,n=,r=abc",
            b"n,,n=us=er,r=abc",
            b"n,,n=user,r=",
            b"n,,n=user,r=a,b",
            b"n,,n=user,r=ab\x01c",
            b"n,a=other,n=user,r=abc",
            b"n,,n=user,r=abc,tokenauth=true",
            b",,,,,,",
            b"=,=,=",
        ];
        for c in cases {
            let mut s = server();
            assert!(
                is_failure(&s.step(c, lookup)),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
        // A long name is fine as input; it is simply unknown.
        assert!(matches!(
            server().step(long.as_bytes(), lookup),
            Step::Challenge(_)
        ));
    }

    #[test]
    fn authzid_and_escaped_names() {
        let mut s = server();
        assert!(matches!(
            s.step(b"n,a=user,n=user,r=abc", lookup),
            Step::Challenge(_)
        ));
        assert_eq!(decode_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(decode_saslname("a=2"), None);
        assert_eq!(decode_saslname("a=ZZ"), None);
        assert!(random_nonce().len() >= 32 && valid_nonce(&random_nonce()));
    }
}
