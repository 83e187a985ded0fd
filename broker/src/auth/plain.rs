//! SASL/PLAIN (RFC 4616) against a static user list from the configuration
//! (`sasl.plain.users=alice:secret,bob:pw`). Meant for development and tests: PLAIN sends the
//! password itself, so use it only over TLS, and it is off unless listed in
//! `sasl.enabled.mechanisms`.

use std::collections::BTreeMap;

use subtle::ConstantTimeEq;

/// Why `sasl.plain.users` does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlainUsersError {
    #[error("each entry must be user:password")]
    NotUserPassword,
    #[error("user and password must not be empty")]
    Empty,
    #[error("user '{0}' appears twice")]
    Duplicate(String),
}

/// Why a PLAIN exchange fails; for logs only (the client learns nothing more than "failed").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PlainAuthError {
    #[error("malformed PLAIN message")]
    Malformed,
    #[error("PLAIN user name is not UTF-8")]
    NotUtf8,
    #[error("empty PLAIN user name")]
    EmptyUser,
    #[error("authorization id differs from the user name")]
    AuthzidDiffers,
    #[error("invalid password")]
    InvalidPassword,
    #[error("unknown user")]
    UnknownUser,
}

/// Static PLAIN users. Debug output never shows passwords.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PlainUsers(BTreeMap<String, String>);

impl std::fmt::Debug for PlainUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl PlainUsers {
    /// Parses `user:password,user:password`. Passwords may contain ':' but not ','.
    pub fn parse(value: &str) -> Result<PlainUsers, PlainUsersError> {
        let mut out = BTreeMap::new();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (user, pw) = item
                .split_once(':')
                .ok_or(PlainUsersError::NotUserPassword)?;
            if user.is_empty() || pw.is_empty() {
                return Err(PlainUsersError::Empty);
            }
            if out.insert(user.to_string(), pw.to_string()).is_some() {
                return Err(PlainUsersError::Duplicate(user.to_string()));
            }
        }
        Ok(PlainUsers(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks one PLAIN message (`[authzid] NUL authcid NUL passwd`). Returns the user name on
    /// success; the error is for logs only.
    pub fn authenticate(&self, message: &[u8]) -> Result<String, PlainAuthError> {
        let mut parts = message.split(|b| *b == 0);
        let (Some(authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PlainAuthError::Malformed);
        };
        let (Ok(authzid), Ok(user)) = (std::str::from_utf8(authzid), std::str::from_utf8(user))
        else {
            return Err(PlainAuthError::NotUtf8);
        };
        if user.is_empty() {
            return Err(PlainAuthError::EmptyUser);
        }
        if !authzid.is_empty() && authzid != user {
            return Err(PlainAuthError::AuthzidDiffers);
        }
        // Compare against something even for unknown users so both paths cost about the same.
        let (known, expected) = match self.0.get(user) {
            Some(p) => (true, p.as_bytes()),
            None => (false, &b"\0unknown-user-placeholder\0"[..]),
        };
        let equal: bool = expected.ct_eq(password).into();
        if known && equal {
            Ok(user.to_string())
        } else if known {
            Err(PlainAuthError::InvalidPassword)
        } else {
            Err(PlainAuthError::UnknownUser)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_authenticate() {
        let u = PlainUsers::parse("alice:secret, bob:p:w").unwrap();
        assert_eq!(u.authenticate(b"\0alice\0secret"), Ok("alice".into()));
        assert_eq!(u.authenticate(b"alice\0alice\0secret"), Ok("alice".into()));
        assert_eq!(u.authenticate(b"\0bob\0p:w"), Ok("bob".into()));
        assert_eq!(
            u.authenticate(b"\0alice\0wrong"),
            Err(PlainAuthError::InvalidPassword)
        );
        assert_eq!(
            u.authenticate(b"\0carol\0secret"),
            Err(PlainAuthError::UnknownUser)
        );
        assert_eq!(
            u.authenticate(b"bob\0alice\0secret"),
            Err(PlainAuthError::AuthzidDiffers)
        );
        assert!(u.authenticate(b"").is_err());
        assert!(u.authenticate(b"\0alice").is_err());
        assert!(u.authenticate(b"\0alice\0secret\0").is_err());
        assert!(u.authenticate(b"\0\xff\0secret").is_err());
        assert!(!format!("{u:?}").contains("secret"));
        assert!(PlainUsers::parse("alice").is_err());
        assert_eq!(
            PlainUsers::parse("a:1,a:2").unwrap_err().to_string(),
            "user 'a' appears twice"
        );
        assert!(PlainUsers::parse(":x").is_err());
        assert!(PlainUsers::parse("").unwrap().is_empty());
    }
}
