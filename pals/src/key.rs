//! The words every part of pals shares about a lock: its PALs-compatible key, and its mode.

use std::fmt;

use sha1::{Digest, Sha1};

/// The PostgreSQL advisory-lock key that PALs (Python) uses for lock `name` of application `app`.
///
/// It is the first 8 bytes of the SHA-1 digest of `"{app}.{name}"`, read as a little-endian
/// `i64`. A Rust service and a Python service using PALs with the same app and lock names
/// therefore take the same lock and exclude each other.
///
/// ```
/// assert_eq!(pals::key("bench", "x"), 4006313728978877621);
/// ```
pub fn key(app: &str, name: &str) -> i64 {
    key_of_full_name(&full_name(app, name))
}

/// The namespaced lock name, `"{app}.{name}"`, as PALs spells it.
pub(crate) fn full_name(app: &str, name: &str) -> String {
    format!("{app}.{name}")
}

/// The key of a full name (`"{app}.{name}"`).
pub(crate) fn key_of_full_name(full_name: &str) -> i64 {
    let digest = Sha1::digest(full_name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_le_bytes(first)
}

/// A lock mode.
///
/// ```
/// assert_eq!(pals::Mode::Shared.to_string(), "shared");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// One holder at a time: `pg_advisory_lock` and friends.
    Exclusive,
    /// Any number of shared holders, and no exclusive one: `pg_advisory_lock_shared` and
    /// friends.
    Shared,
}

impl Mode {
    /// 0 for exclusive, 1 for shared: an index into per-mode tables.
    pub(crate) fn index(self) -> usize {
        match self {
            Mode::Exclusive => 0,
            Mode::Shared => 1,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_pals_test_vector() {
        assert_eq!(key("bench", "x"), 4006313728978877621);
    }

    #[test]
    fn hashes_the_dotted_full_name() {
        assert_eq!(key("a.b", "c"), key("a", "b.c"));
        assert_ne!(key("a", "bc"), key("ab", "c"));
    }
}
