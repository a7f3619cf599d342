//! Call metadata: ordered key/value pairs sent with a request and with a response.
//!
//! Keys are lowercase ASCII (`a-z`, `0-9`, `-`, `_`, `.`), 1 to 255 bytes, as in gRPC;
//! values are arbitrary bytes. A key may repeat. Received metadata is one allocation per
//! frame, apart from the connection's read buffer (a call that keeps it does not keep the
//! buffer alive); reading it copies nothing.
//!
//! ```
//! use rpc_core::Metadata;
//!
//! let mut md = Metadata::new();
//! md.insert("x-request-id", "42");
//! md.append("x-tag", "a");
//! md.append("x-tag", "b");
//! assert_eq!(md.get_str("x-request-id"), Some("42"));
//! assert_eq!(md.get_all("x-tag").count(), 2);
//! ```

use std::fmt;

use bytes::Bytes;

/// The longest metadata key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// A validated metadata key: 1 to 255 bytes of `a-z`, `0-9`, `-`, `_` or `.`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MetadataKey(Bytes);

/// The error for a string that is not a valid metadata key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid metadata key {key:?}: keys are 1-255 bytes of a-z, 0-9, '-', '_' or '.'")]
pub struct InvalidMetadataKey {
    key: String,
}

impl MetadataKey {
    /// Makes a key from a string literal.
    ///
    /// # Panics
    /// If `key` is not a valid key; use `MetadataKey::try_from` for keys that come from input.
    #[allow(clippy::panic)] // A literal key is the programmer's, like `HeaderName::from_static`.
    pub fn from_static(key: &'static str) -> Self {
        match Self::validate(key.as_bytes()) {
            true => Self(Bytes::from_static(key.as_bytes())),
            false => panic!("{}", InvalidMetadataKey { key: key.to_owned() }),
        }
    }

    /// Makes a key from bytes received on the wire, without copying them.
    pub(crate) fn from_wire(bytes: Bytes) -> Result<Self, InvalidMetadataKey> {
        if Self::validate(&bytes) {
            Ok(Self(bytes))
        } else {
            // The key may be a peer's: keep a bounded prefix for the message.
            let shown = &bytes[..bytes.len().min(64)];
            Err(InvalidMetadataKey { key: String::from_utf8_lossy(shown).into_owned() })
        }
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        // Validation admits ASCII only, so this never takes the fallback.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub(crate) fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    fn validate(key: &[u8]) -> bool {
        !key.is_empty()
            && key.len() <= MAX_KEY_LEN
            && key.iter().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'))
    }
}

impl fmt::Debug for MetadataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MetadataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&'static str> for MetadataKey {
    /// See [`MetadataKey::from_static`]: panics on an invalid key.
    fn from(key: &'static str) -> Self {
        Self::from_static(key)
    }
}

impl TryFrom<String> for MetadataKey {
    type Error = InvalidMetadataKey;

    fn try_from(key: String) -> Result<Self, Self::Error> {
        Self::from_wire(Bytes::from(key))
    }
}

impl TryFrom<&String> for MetadataKey {
    type Error = InvalidMetadataKey;

    fn try_from(key: &String) -> Result<Self, Self::Error> {
        Self::from_wire(Bytes::copy_from_slice(key.as_bytes()))
    }
}

/// Ordered key/value pairs carried by a call; see the [module docs](self).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(MetadataKey, Bytes)>,
}

impl Metadata {
    /// An empty map. It allocates nothing until the first insert.
    pub const fn new() -> Self {
        Self { entries: Vec::new() }
    }

    /// The number of entries, counting repeated keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets `key` to `value`, replacing every earlier value of `key`.
    pub fn insert(&mut self, key: impl Into<MetadataKey>, value: impl Into<Bytes>) {
        let key = key.into();
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push((key, value.into()));
    }

    /// Adds a value for `key`, keeping the earlier ones.
    pub fn append(&mut self, key: impl Into<MetadataKey>, value: impl Into<Bytes>) {
        self.entries.push((key.into(), value.into()));
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&Bytes> {
        self.entries.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
    }

    /// The first value of `key`, if it is valid UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Bytes> + 'a {
        self.entries.iter().filter(move |(k, _)| k.as_str() == key).map(|(_, v)| v)
    }

    /// Whether `key` has at least one value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Removes every value of `key`, returning the first.
    pub fn remove(&mut self, key: &str) -> Option<Bytes> {
        let mut first = None;
        self.entries.retain(|(k, v)| {
            if k.as_str() != key {
                return true;
            }
            if first.is_none() {
                first = Some(v.clone());
            }
            false
        });
        first
    }

    /// All entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&MetadataKey, &Bytes)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// Appends every entry of `other`.
    pub fn extend(&mut self, other: Metadata) {
        self.entries.extend(other.entries);
    }

    pub(crate) fn push_wire(&mut self, key: MetadataKey, value: Bytes) {
        self.entries.push((key, value));
    }

    /// Replaces every key's and value's bytes with `rebase` of them (the same bytes, held
    /// elsewhere).
    pub(crate) fn rebase(&mut self, mut rebase: impl FnMut(&Bytes) -> Bytes) {
        for (key, value) in &mut self.entries {
            key.0 = rebase(&key.0);
            *value = rebase(value);
        }
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.entries {
            match std::str::from_utf8(v) {
                Ok(s) => map.entry(k, &s),
                Err(_) => map.entry(k, v),
            };
        }
        map.finish()
    }
}

impl<K: Into<MetadataKey>, V: Into<Bytes>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self { entries: iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_append_keeps() {
        let mut md = Metadata::new();
        md.append("k", "1");
        md.append("k", "2");
        assert_eq!(md.get_all("k").count(), 2);
        md.insert("k", "3");
        assert_eq!(md.get_all("k").collect::<Vec<_>>(), [&Bytes::from("3")]);
    }

    #[test]
    fn remove_takes_every_value_and_returns_the_first() {
        let mut md: Metadata = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        assert_eq!(md.remove("a"), Some(Bytes::from("1")));
        assert_eq!(md.len(), 1);
        assert_eq!(md.remove("a"), None);
    }

    #[test]
    fn keys_are_validated() {
        assert!(MetadataKey::try_from("x-request-id".to_owned()).is_ok());
        assert!(MetadataKey::try_from("Upper".to_owned()).is_err());
        assert!(MetadataKey::try_from(String::new()).is_err());
        assert!(MetadataKey::try_from("a b".to_owned()).is_err());
        assert!(MetadataKey::try_from("k".repeat(256)).is_err());
        assert!(MetadataKey::try_from("k".repeat(255)).is_ok());
    }

    #[test]
    #[should_panic(expected = "invalid metadata key")]
    fn invalid_static_key_panics() {
        let _ = MetadataKey::from_static("Bad Key");
    }
}
