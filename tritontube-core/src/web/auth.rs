//! Accounts on the web: passwords, sessions, CSRF tokens, and who may
//! change a video.
//!
//! - **Passwords** are hashed with argon2id ([`hash_password`]); the store
//!   keeps only the PHC string. Checking one ([`Accounts::sign_in`]) always
//!   runs argon2, against a stand-in hash for an unknown name, so an
//!   answer's timing does not tell which names exist; at most
//!   [`MAX_CONCURRENT_VERIFICATIONS`] run at once, which bounds what a
//!   flood of sign-ins can cost.
//! - **Sessions**: signing in makes a random 256-bit token, sent to the
//!   browser in the cookie [`SESSION_COOKIE`] (`HttpOnly; SameSite=Lax;
//!   Path=/`); the store keeps only its SHA-256 ([`token_hash`]), so a copy
//!   of the metadata lets no one in. Signing out deletes it server-side.
//! - **CSRF**: every state-changing request that a session cookie
//!   authenticates must also carry the session's CSRF token
//!   ([`csrf_token`], derived from the session token, so nothing more is
//!   stored): the hidden form field [`CSRF_FIELD`], or the header
//!   [`CSRF_HEADER`] for `fetch`. A request authenticated by the admin
//!   token (`Authorization: Bearer`) needs none: no browser sends that on
//!   its own.
//! - **Who may change a video** ([`may_change`]): its uploader, and admins.

use std::sync::OnceLock;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::metadata::{MetadataStore, Role, Session, User, Video, validate_user_name};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "tt_session";
/// The header that carries the CSRF token on `fetch` requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(14 * 24 * 3600);
/// Password checks running at once (each takes argon2's memory and a core
/// for a moment); more sign-ins wait their turn.
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 2;
/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The name of the account made on the first start.
pub const OWNER_NAME: &str = "owner";

/// Accounts as the web server applies them.
#[derive(Debug)]
pub struct Accounts {
    /// Whether anyone may upload without signing in (the course project's
    /// open `POST /upload`).
    pub public_uploads: bool,
    verifications: Semaphore,
}

impl Default for Accounts {
    /// Uploads need a signed-in user.
    fn default() -> Self {
        Accounts::new(false)
    }
}

/// A signed-in caller: its account, and its session's token hash and CSRF
/// token.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The account.
    pub user: User,
    /// SHA-256 of its session token.
    pub token_hash: String,
    /// The CSRF token its forms and `fetch` calls must send.
    pub csrf: String,
}

impl SignedIn {
    /// Checks the CSRF token a state-changing request sent; a missing or
    /// wrong one is [`Error::Forbidden`] and nothing is done.
    pub fn check_csrf(&self, sent: Option<&str>) -> Result<()> {
        match sent {
            Some(s)
                if crate::admin::constant_time_eq(s.trim().as_bytes(), self.csrf.as_bytes()) =>
            {
                Ok(())
            }
            Some(_) => Err(Error::Forbidden {
                reason: "the form's CSRF token is wrong or stale: reload the page and try again"
                    .into(),
            }),
            None => Err(Error::Forbidden {
                reason: format!(
                    "a request made with the session cookie needs its CSRF token (form field \
                     `{CSRF_FIELD}` or header `X-CSRF-Token`)"
                ),
            }),
        }
    }
}

impl Accounts {
    /// Accounts with uploads open to anyone (`true`) or only to signed-in
    /// users.
    pub fn new(public_uploads: bool) -> Self {
        Accounts {
            public_uploads,
            verifications: Semaphore::new(MAX_CONCURRENT_VERIFICATIONS),
        }
    }

    /// Checks a name and password; on success records a new session and
    /// returns its token (for the cookie) and the signed-in caller. A wrong
    /// password and an unknown name get the same refusal.
    pub async fn sign_in(
        &self,
        meta: &dyn MetadataStore,
        name: &str,
        password: &str,
    ) -> Result<(String, SignedIn)> {
        let refused = || Error::Unauthenticated {
            reason: "wrong user name or password".into(),
        };
        let user = match validate_user_name(name) {
            Ok(()) => meta.user(name).await?,
            Err(_) => None,
        };
        let hash = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| stand_in_hash().to_string());
        let _turn = self
            .verifications
            .acquire()
            .await
            .map_err(|e| Error::backend("accounts", "password checks stopped", e))?;
        let ok = verify_password(hash, password.to_string()).await?;
        let Some(user) = user.filter(|_| ok) else {
            tracing::info!(user = name, "sign-in refused");
            return Err(refused());
        };
        let token = new_token();
        let session = Session {
            token_hash: token_hash(&token),
            user: user.name.clone(),
            expires_ms: crate::metadata::lifecycle::now_ms() + SESSION_TTL.as_millis() as i64,
        };
        meta.create_session(&session).await?;
        tracing::info!(user = %user.name, "signed in");
        let signed = SignedIn {
            csrf: csrf_token(&token),
            token_hash: session.token_hash,
            user,
        };
        Ok((token, signed))
    }

    /// The caller a session cookie names, if it names a live session of an
    /// existing account (a stale or forged cookie is no one).
    pub async fn signed_in(
        &self,
        meta: &dyn MetadataStore,
        cookie: Option<&str>,
    ) -> Result<Option<SignedIn>> {
        let Some(token) = cookie.map(str::trim).filter(|t| is_token(t)) else {
            return Ok(None);
        };
        let hash = token_hash(token);
        let Some(session) = meta.session(&hash).await? else {
            return Ok(None);
        };
        let Some(user) = meta.user(&session.user).await? else {
            return Ok(None);
        };
        Ok(Some(SignedIn {
            user,
            token_hash: hash,
            csrf: csrf_token(token),
        }))
    }
}

/// Whether `caller` may edit or delete `video`: admins may change any
/// video; a user only the videos they uploaded (a video with no recorded
/// uploader is for admins only). A refusal is [`Error::Forbidden`].
pub fn may_change(video: &Video, caller: &User) -> Result<()> {
    if caller.role.is_admin() || video.owner.as_deref() == Some(caller.name.as_str()) {
        Ok(())
    } else {
        Err(Error::Forbidden {
            reason: format!(
                "only the video's uploader and admins may change {}; you are signed in as {}",
                video.id, caller.name
            ),
        })
    }
}

/// Checks a new password: at least 8 characters, at most 1024 bytes.
pub fn validate_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::invalid(
            "password",
            "",
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid(
            "password",
            "",
            format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The argon2id hash of `password` (a PHC string) with a fresh random salt,
/// computed off the async workers.
pub async fn hash_password(password: &str) -> Result<String> {
    validate_password(password)?;
    let password = password.to_string();
    tokio::task::spawn_blocking(move || hash_now(&password))
        .await
        .map_err(|e| Error::backend("accounts", "hashing task failed", e))?
}

fn hash_now(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| Error::backend("accounts", "making a salt failed", e))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::backend("accounts", "hashing a password failed", e))
}

/// Whether `password` matches the PHC string `hash` (a malformed hash
/// matches nothing), computed off the async workers.
async fn verify_password(hash: String, password: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .map_err(|e| Error::backend("accounts", "password check failed", e))
}

/// A hash no password is known to match, checked for unknown names so that
/// they take as long as known ones.
fn stand_in_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_now(&new_token()).unwrap_or_default())
}

/// A new random 256-bit session token, as 64 hex digits.
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Whether `s` looks like a token [`new_token`] makes.
fn is_token(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The SHA-256 of a session token, as stored.
///
/// ```
/// use tritontube_core::web::auth::token_hash;
/// assert_eq!(token_hash("").len(), 64);
/// assert_ne!(token_hash("a"), token_hash("b"));
/// ```
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The CSRF token of a session: a hash of its token under another label,
/// so it is tied to the session, and neither it nor the stored hash gives
/// the token away.
pub fn csrf_token(token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"tritontube csrf\0");
    h.update(token.as_bytes());
    hex::encode(h.finalize())
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie(token: &str) -> String {
    format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn cleared_cookie() -> String {
    format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0")
}

/// A random password for the owner's first start: 20 letters and digits
/// (about 119 bits).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()] as char)
        .collect()
}

/// On a store with no accounts yet, makes the [`OWNER_NAME`] account with a
/// random password and returns that password, to be shown once. `None` if
/// there are accounts already (or another server made the owner first).
pub async fn ensure_owner(meta: &dyn MetadataStore) -> Result<Option<String>> {
    if !meta.list_users().await?.is_empty() {
        return Ok(None);
    }
    let password = generate_password();
    let user = new_user(OWNER_NAME, Role::Owner, &password).await?;
    match meta.create_user(&user).await {
        Ok(()) => Ok(Some(password)),
        Err(Error::AlreadyExists { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A new account record: the name checked, the password checked and
/// hashed.
pub async fn new_user(name: &str, role: Role, password: &str) -> Result<User> {
    validate_user_name(name)?;
    Ok(User {
        name: name.to_string(),
        role,
        password_hash: hash_password(password).await?,
        created_ms: crate::metadata::lifecycle::now_ms(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::VideoId;

    fn user(name: &str, role: Role) -> User {
        User {
            name: name.into(),
            role,
            password_hash: String::new(),
            created_ms: 0,
        }
    }

    #[tokio::test]
    async fn passwords_hash_to_salted_argon2id_and_verify() {
        let a = hash_password("correct horse").await.unwrap();
        let b = hash_password("correct horse").await.unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(
            verify_password(a.clone(), "correct horse".into())
                .await
                .unwrap()
        );
        assert!(!verify_password(a, "correct horsE".into()).await.unwrap());
        assert!(
            !verify_password("not a hash".into(), "x".into())
                .await
                .unwrap()
        );
        assert!(matches!(
            hash_password("short").await,
            Err(Error::InvalidInput { .. })
        ));
        assert!(
            hash_password(&"x".repeat(MAX_PASSWORD_BYTES + 1))
                .await
                .is_err()
        );
    }

    #[test]
    fn tokens_are_random_and_their_hash_and_csrf_token_differ() {
        let t = new_token();
        assert_eq!(t.len(), 64);
        assert!(is_token(&t));
        assert_ne!(t, new_token());
        assert_ne!(token_hash(&t), csrf_token(&t));
        assert_eq!(csrf_token(&t), csrf_token(&t), "stable for a session");
        assert!(!is_token("tt_session") && !is_token(&"z".repeat(64)));
        let p = generate_password();
        assert_eq!(p.len(), 20);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site() {
        let c = session_cookie("abc");
        assert!(c.starts_with("tt_session=abc;"), "{c}");
        for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(c.contains(flag), "{c}");
        }
        assert!(cleared_cookie().contains("Max-Age=0"));
    }

    #[test]
    fn only_the_uploader_and_admins_may_change_a_video() {
        let mut v = Video::new(VideoId::new("clip").unwrap(), "Clip");
        v.owner = Some("alice".into());
        assert!(may_change(&v, &user("alice", Role::User)).is_ok());
        assert!(may_change(&v, &user("carol", Role::Admin)).is_ok());
        assert!(may_change(&v, &user("owner", Role::Owner)).is_ok());
        let e = may_change(&v, &user("bob", Role::User)).unwrap_err();
        assert!(matches!(e, Error::Forbidden { .. }), "{e}");
        assert_eq!(e.http_status(), 403);
        v.owner = None;
        assert!(
            may_change(&v, &user("alice", Role::User)).is_err(),
            "no owner: admins only"
        );
        assert!(may_change(&v, &user("carol", Role::Admin)).is_ok());
    }

    #[test]
    fn the_csrf_token_must_match() {
        let s = SignedIn {
            user: user("alice", Role::User),
            token_hash: token_hash("t"),
            csrf: csrf_token("t"),
        };
        assert!(s.check_csrf(Some(&csrf_token("t"))).is_ok());
        let other = csrf_token("u");
        for bad in [None, Some(""), Some("x"), Some(other.as_str())] {
            let e = s.check_csrf(bad).unwrap_err();
            assert_eq!(e.http_status(), 403, "{bad:?}");
        }
    }
}
