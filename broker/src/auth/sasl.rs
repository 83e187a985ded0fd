//! SASL mechanisms the broker offers and one authenticator per connection that drives either of
//! them: PLAIN (static users from the configuration) and SCRAM-SHA-256/512 (credentials from the
//! metadata image). The network layer feeds it client tokens, from SaslAuthenticate requests or
//! raw after a v0 SaslHandshake, and sends back what it returns.

use super::plain::PlainUsers;
use super::scram::{ScramCredential, ScramMechanism};
use super::scram_server::{ScramServer, Step};

/// A SASL mechanism name as clients send it in SaslHandshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslMechanism {
    Plain,
    Scram(ScramMechanism),
}

impl SaslMechanism {
    pub fn parse(name: &str) -> Option<SaslMechanism> {
        match name {
            "PLAIN" => Some(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Some(SaslMechanism::Scram(ScramMechanism::Sha256)),
            "SCRAM-SHA-512" => Some(SaslMechanism::Scram(ScramMechanism::Sha512)),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }

    /// Kafka's client-facing text for a failed authentication (the same for an unknown user and
    /// a wrong password).
    pub fn failure_message(self) -> String {
        format!(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
            self.name()
        )
    }
}

/// Where an authenticator finds credentials.
pub trait Credentials {
    fn scram(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential>;
    fn plain_users(&self) -> &PlainUsers;
}

/// One connection's exchange for the mechanism chosen in SaslHandshake.
pub enum Authenticator {
    Plain { done: bool },
    Scram(Box<ScramServer>),
}

impl Authenticator {
    pub fn new(mechanism: SaslMechanism) -> Authenticator {
        match mechanism {
            SaslMechanism::Plain => Authenticator::Plain { done: false },
            SaslMechanism::Scram(m) => Authenticator::Scram(Box::new(ScramServer::new(m))),
        }
    }

    /// Feeds one client token.
    pub fn step(&mut self, token: &[u8], creds: &dyn Credentials) -> Step {
        match self {
            Authenticator::Plain { done } => {
                if std::mem::replace(done, true) {
                    return Step::Failure("PLAIN exchange already finished".into());
                }
                match creds.plain_users().authenticate(token) {
                    Ok(user) => Step::Success {
                        user,
                        response: Vec::new(),
                    },
                    Err(e) => Step::Failure(e.to_string()),
                }
            }
            Authenticator::Scram(s) => {
                let mechanism = s.mechanism();
                s.step(token, |u| creds.scram(u, mechanism))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Creds(PlainUsers);
    impl Credentials for Creds {
        fn scram(&self, _: &str, _: ScramMechanism) -> Option<ScramCredential> {
            None
        }
        fn plain_users(&self) -> &PlainUsers {
            &self.0
        }
    }

    #[test]
    fn names_and_plain_once() {
        assert_eq!(SaslMechanism::parse("PLAIN"), Some(SaslMechanism::Plain));
        assert_eq!(SaslMechanism::parse("GSSAPI"), None);
        assert_eq!(SaslMechanism::parse("scram-sha-256"), None);
        assert!(SaslMechanism::Scram(ScramMechanism::Sha512)
            .failure_message()
            .ends_with("with SASL mechanism SCRAM-SHA-512"));
        let creds = Creds(PlainUsers::parse("a:b").unwrap());
        let mut a = Authenticator::new(SaslMechanism::Plain);
        assert!(matches!(a.step(b"\0a\0b", &creds), Step::Success { .. }));
        assert!(matches!(a.step(b"\0a\0b", &creds), Step::Failure(_)));
        let mut s = Authenticator::new(SaslMechanism::Scram(ScramMechanism::Sha256));
        assert!(matches!(s.step(b"n,,n=a,r=x", &creds), Step::Challenge(_)));
    }
}
