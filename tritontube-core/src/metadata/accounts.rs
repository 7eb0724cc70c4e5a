//! The records of accounts: [`User`]s (a name, a [`Role`] and an argon2
//! password hash) and signed-in [`Session`]s, kept by every
//! [`MetadataStore`](super::MetadataStore) beside the videos.
//!
//! A store never sees a password or a session token: only the password's
//! argon2 PHC string and the SHA-256 of the token (see `web::auth`), so a
//! copy of the metadata lets no one sign in.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a user may do beyond watching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The account made on the first start: an admin that cannot be
    /// demoted by another admin.
    Owner,
    /// May edit and delete every video.
    Admin,
    /// May upload, and edit and delete their own videos.
    User,
}

impl Role {
    /// `"owner"`, `"admin"` or `"user"`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    /// Whether this role may edit and delete any video.
    pub fn is_admin(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its name, as typed to sign in ([`validate_user_name`]).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The password's argon2 hash as a PHC string
    /// (`$argon2id$v=19$m=...$salt$hash`).
    pub password_hash: String,
    /// When it was made, Unix milliseconds.
    pub created_ms: i64,
}

/// A signed-in browser: the SHA-256 of its session token, whose account it
/// is, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// SHA-256 of the token the browser holds, 64 lower-case hex digits.
    pub token_hash: String,
    /// The user's name.
    pub user: String,
    /// When it lapses, Unix milliseconds.
    pub expires_ms: i64,
}

/// Longest user name, in characters.
pub const MAX_USER_NAME_CHARS: usize = 64;

/// Checks a user name: 1 to 64 characters of `[A-Za-z0-9._-]`, starting
/// with a letter or digit.
///
/// ```
/// use tritontube_core::metadata::validate_user_name;
/// assert!(validate_user_name("alice").is_ok());
/// assert!(validate_user_name("bob.smith-2").is_ok());
/// assert!(validate_user_name("").is_err());
/// assert!(validate_user_name(".hidden").is_err());
/// assert!(validate_user_name("a b").is_err());
/// ```
pub fn validate_user_name(name: &str) -> Result<()> {
    let bad = |reason: &str| Error::invalid("user name", name, reason);
    if name.is_empty() || name.chars().count() > MAX_USER_NAME_CHARS {
        return Err(bad("must be 1 to 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(bad(
            "may hold only letters, digits, '.', '_' and '-' (no spaces)",
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(bad("must start with a letter or a digit"));
    }
    Ok(())
}

/// Checks a session token hash: 64 lower-case hex digits.
pub(crate) fn validate_token_hash(hash: &str) -> Result<()> {
    if hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(Error::invalid(
            "session token hash",
            hash,
            "expected 64 lower-case hex digits (a SHA-256)",
        ))
    }
}
