//! `BlobId`: the blake3 hash that names every blob, and helpers to compute it.

use std::fmt;
use std::io::Read;

use serde::{Deserialize, Serialize};

/// Content address of a blob: the blake3 hash of its raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobId(pub [u8; 32]);

impl BlobId {
    /// Hash a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        BlobId(*blake3::hash(bytes).as_bytes())
    }

    /// Hash everything a reader yields, in 1 MiB pieces; returns the id and the byte count.
    pub fn of_reader(mut r: impl Read) -> std::io::Result<(Self, u64)> {
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            total += n as u64;
        }
        Ok((BlobId(*hasher.finalize().as_bytes()), total))
    }

    /// The id of the empty blob (every new file starts bound to it); hashed once.
    pub fn empty() -> Self {
        static EMPTY: std::sync::OnceLock<BlobId> = std::sync::OnceLock::new();
        *EMPTY.get_or_init(|| Self::of(&[]))
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse 64 hex characters; anything else is `None` (names from disk are untrusted).
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(BlobId(out))
    }

    /// The two-hex-digit fan-out directory used by the flat tier and object keys.
    pub fn fanout(&self) -> String {
        hex::encode(&self.0[..1])
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        let id = BlobId::of(b"hello");
        assert_eq!(BlobId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(BlobId::from_hex("zz"), None);
        assert_eq!(BlobId::from_hex(&"g".repeat(64)), None);
        assert_eq!(id.fanout(), id.to_hex()[..2].to_string());
    }

    #[test]
    fn reader_hash_matches_slice_hash() {
        let data = vec![7u8; 3 << 20];
        let (id, n) = BlobId::of_reader(&data[..]).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(id, BlobId::of(&data));
    }
}
