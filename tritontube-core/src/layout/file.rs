//! The facts of a stored file: its key, size and SHA-256, as stores list
//! them and the planner compares them.

use crate::id::ContentKey;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// From 32 raw bytes.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(b).ok().map(Sha256Digest)
    }

    /// From 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Sha256Digest(out))
    }
}

impl std::fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The facts of one stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its key.
    pub key: ContentKey,
    /// Size of the whole file in bytes.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: Sha256Digest,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_a_digest() {
        let d = Sha256Digest(std::array::from_fn(|i| (i * 37) as u8));
        let hex = d.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(&hex[..6], "00254a");
        assert_eq!(Sha256Digest::from_hex(&hex), Some(d));
        assert_eq!(Sha256Digest::from_hex(&hex.to_uppercase()), Some(d));
        for bad in [
            "",
            "00",
            &hex[..63],
            &format!("{hex}00"),
            &hex.replace('0', "g"),
        ] {
            assert_eq!(Sha256Digest::from_hex(bad), None, "{bad:?}");
        }
        assert_eq!(format!("{d}"), hex);
    }
}
