//! The object envelope (docs/on-disk-format.md): `WBFS` magic, format version, codec (raw | zstd),
//! raw length, blake3 of the raw bytes, then the payload.
//!
//! ```text
//! offset size field
//! 0      4    magic  b"WBFS"
//! 4      1    format version (1)
//! 5      1    codec: 0 = raw, 1 = zstd
//! 6      2    reserved, zero
//! 8      8    raw length, little endian
//! 16     32   blake3 of the raw bytes
//! 48     ..   payload                                  (format version 1)
//! 48     4    n = chunk count, u32 LE                  (format version 2: raw blobs > 1 MiB)
//! 52     32·n blake3 chaining value of each 1 MiB chunk (see `proof`)
//! 52+32n ..   payload
//! ```
//! Version 2 lets a reader verify each 1 MiB range as it arrives (the table is checked once
//! against the blob id), so a large cold blob can be served before it is fully downloaded.

use thiserror::Error;

use crate::blob::BlobId;

/// Envelope magic.
pub const MAGIC: &[u8; 4] = b"WBFS";
/// Envelope format version of small or compressed blobs.
pub const VERSION: u8 = 1;
/// Envelope format version with a chunk-proof table (raw blobs larger than one chunk).
pub const VERSION_PROOFS: u8 = 2;
/// Header length in bytes.
pub const HEADER_LEN: usize = 48;

/// How payloads are compressed when enveloped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Never compress.
    None,
    /// Compress with zstd at this level; keep raw when it saves less than 3 %.
    Auto(i32),
    /// Always zstd at this level.
    Zstd(i32),
}

/// Payload codec recorded in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Payload is the raw bytes.
    Raw = 0,
    /// Payload is one zstd frame.
    Zstd = 1,
}

/// Why an envelope could not be decoded.
#[derive(Debug, Error)]
pub enum CodecError {
    /// Shorter than a header, wrong magic, or unknown version/codec.
    #[error("not a wombatfs envelope: {0}")]
    Malformed(&'static str),
    /// zstd could not decode the payload.
    #[error("zstd payload corrupt")]
    Zstd(#[source] std::io::Error),
    /// The decoded bytes do not hash to the recorded (or expected) id.
    #[error("blob content does not match its hash (expected {expected}, got {actual})")]
    HashMismatch {
        /// the id that was expected
        expected: BlobId,
        /// the id of the bytes actually found
        actual: BlobId,
    },
}

/// Wrap raw bytes in an envelope, compressing as `compression` says.
pub fn encode(raw: &[u8], compression: Compression) -> Vec<u8> {
    let id = BlobId::of(raw);
    let compressed = match compression {
        Compression::None => None,
        Compression::Zstd(level) => zstd::bulk::compress(raw, level).ok(),
        Compression::Auto(level) => zstd::bulk::compress(raw, level)
            .ok()
            .filter(|c| (c.len() as u128) * 100 <= (raw.len() as u128) * 97),
    };
    let (codec, payload): (Codec, &[u8]) = match &compressed {
        Some(c) => (Codec::Zstd, c),
        None => (Codec::Raw, raw),
    };
    let proofs = codec == Codec::Raw && raw.len() as u64 > crate::proof::CHUNK;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(if proofs { VERSION_PROOFS } else { VERSION });
    out.push(codec as u8);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(raw.len() as u64).to_le_bytes());
    out.extend_from_slice(&id.0);
    if proofs {
        let table = crate::proof::table(raw);
        out.extend_from_slice(&(table.len() as u32).to_le_bytes());
        for cv in &table {
            out.extend_from_slice(cv);
        }
    }
    out.extend_from_slice(payload);
    out
}

/// What the first bytes of an envelope say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// payload codec
    pub codec: Codec,
    /// raw length
    pub raw_len: u64,
    /// where the payload starts
    pub payload_offset: usize,
    /// chunk chaining values (version 2), already checked against the blob id
    pub proofs: Option<Vec<[u8; 32]>>,
}

/// Parse and check the header (and proof table) from the first bytes of an envelope.
/// `Ok(Err(n))` means more bytes are needed: at least `n`.
pub fn parse_header(env: &[u8], expected: &BlobId) -> Result<Result<Header, usize>, CodecError> {
    if env.len() < HEADER_LEN {
        return Ok(Err(HEADER_LEN));
    }
    if &env[..4] != MAGIC {
        return Err(CodecError::Malformed("bad magic"));
    }
    let codec = match env[5] {
        0 => Codec::Raw,
        1 => Codec::Zstd,
        _ => return Err(CodecError::Malformed("unknown codec")),
    };
    let raw_len = u64::from_le_bytes(env[8..16].try_into().unwrap_or([0; 8]));
    if &env[16..48] != expected.0.as_slice() {
        return Err(CodecError::Malformed("envelope names another blob"));
    }
    match env[4] {
        VERSION => Ok(Ok(Header { codec, raw_len, payload_offset: HEADER_LEN, proofs: None })),
        VERSION_PROOFS => {
            if env.len() < HEADER_LEN + 4 {
                return Ok(Err(HEADER_LEN + 4));
            }
            let n = u32::from_le_bytes(env[48..52].try_into().unwrap_or([0; 4])) as usize;
            if n as u64 != crate::proof::chunks(raw_len) || codec != Codec::Raw {
                return Err(CodecError::Malformed("proof table does not fit the blob"));
            }
            let end = HEADER_LEN + 4 + 32 * n;
            if env.len() < end {
                return Ok(Err(end));
            }
            let table: Vec<[u8; 32]> = env[52..end].chunks(32).map(|c| c.try_into().unwrap_or([0; 32])).collect();
            match crate::proof::root(&table, raw_len) {
                Some(root) if root == *expected => {}
                Some(actual) => return Err(CodecError::HashMismatch { expected: *expected, actual }),
                None => return Err(CodecError::Malformed("proof table does not fit the blob")),
            }
            Ok(Ok(Header { codec, raw_len, payload_offset: end, proofs: Some(table) }))
        }
        _ => Err(CodecError::Malformed("unknown format version")),
    }
}

/// Decode an envelope and verify the raw bytes hash to `expected`.
pub fn decode(env: &[u8], expected: &BlobId) -> Result<Vec<u8>, CodecError> {
    let header = match parse_header(env, expected)? {
        Ok(h) => h,
        Err(_) => return Err(CodecError::Malformed("shorter than header")),
    };
    let raw_len = header.raw_len;
    let payload = &env[header.payload_offset..];
    let raw = match header.codec {
        Codec::Raw => payload.to_vec(),
        Codec::Zstd => {
            let cap = usize::try_from(raw_len).map_err(|_| CodecError::Malformed("raw length"))?;
            zstd::bulk::decompress(payload, cap).map_err(CodecError::Zstd)?
        }
    };
    if raw.len() as u64 != raw_len {
        return Err(CodecError::Malformed("raw length does not match header"));
    }
    let actual = BlobId::of(&raw);
    if &actual != expected {
        return Err(CodecError::HashMismatch { expected: *expected, actual });
    }
    Ok(raw)
}

/// Wrap a metadata object (tree snapshot, change batch) in a self-verifying envelope: the
/// header records the blake3 of the content, so no external id is needed to check it.
pub fn seal_meta(body: &[u8]) -> Vec<u8> {
    encode(body, Compression::Auto(3))
}

/// Open an envelope made by [`seal_meta`], verifying its content against the hash it carries.
pub fn open_meta(env: &[u8]) -> Result<Vec<u8>, CodecError> {
    let id = env.get(16..HEADER_LEN).and_then(|b| <[u8; 32]>::try_from(b).ok()).map(BlobId);
    decode(env, &id.ok_or(CodecError::Malformed("shorter than header"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_codecs() {
        let compressible = vec![42u8; 100_000];
        let random: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for data in [&compressible, &random, &Vec::new()] {
            let id = BlobId::of(data);
            for c in [Compression::None, Compression::Auto(1), Compression::Zstd(3)] {
                let env = encode(data, c);
                assert_eq!(&decode(&env, &id).unwrap(), data);
            }
        }
        assert_eq!(encode(&compressible, Compression::Auto(1))[5], Codec::Zstd as u8);
    }

    #[test]
    fn auto_keeps_incompressible_raw() {
        let random: Vec<u8> = (0..65536u32).map(|i| blake3::hash(&i.to_le_bytes()).as_bytes()[0]).collect();
        assert_eq!(encode(&random, Compression::Auto(1))[5], Codec::Raw as u8);
    }

    #[test]
    fn corruption_is_detected() {
        let data = b"some kv block".to_vec();
        let id = BlobId::of(&data);
        let mut env = encode(&data, Compression::None);
        let last = env.len() - 1;
        env[last] ^= 1;
        assert!(matches!(decode(&env, &id), Err(CodecError::HashMismatch { .. })));
        assert!(matches!(decode(b"WBF", &id), Err(CodecError::Malformed(_))));
        let mut bad = encode(&data, Compression::None);
        bad[0] = b'X';
        assert!(matches!(decode(&bad, &id), Err(CodecError::Malformed(_))));
    }

    #[test]
    fn large_raw_blobs_carry_a_verified_proof_table() {
        let data: Vec<u8> = (0..(3u32 << 20) + 5).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let id = BlobId::of(&data);
        let env = encode(&data, Compression::None);
        assert_eq!(env[4], VERSION_PROOFS);
        let h = parse_header(&env[..60], &id).unwrap();
        assert!(h.is_err(), "needs the whole table");
        let h = parse_header(&env, &id).unwrap().unwrap();
        assert_eq!(h.proofs.as_ref().map(Vec::len), Some(4));
        assert_eq!(h.payload_offset, 52 + 4 * 32);
        assert_eq!(decode(&env, &id).unwrap(), data);
        let mut bad = env.clone();
        bad[60] ^= 1; // a proof value
        assert!(parse_header(&bad, &id).is_err());
        let mut other = env.clone();
        other[20] ^= 1; // the recorded id
        assert!(parse_header(&other, &id).is_err());
    }

    /// Pins the on-disk format: changing it must be a conscious format-version bump.
    #[test]
    fn envelope_snapshot() {
        let env = encode(b"abc", Compression::None);
        let expected_head = "5742465301000000030000000000000";
        assert!(hex::encode(&env).starts_with(expected_head), "{}", hex::encode(&env));
        assert_eq!(&env[16..48], blake3::hash(b"abc").as_bytes());
        assert_eq!(&env[48..], b"abc");
        assert_eq!(env.len(), HEADER_LEN + 3);
    }
}
