//! Per-range proofs for blobs: the blake3 chaining value of every 1 MiB chunk. The values
//! merge (blake3's own tree) into the blob id, so a reader checks the table once against the
//! id and then verifies each chunk the moment it arrives — bytes of a large cold blob can be
//! served before the rest of it has been downloaded, and are still never unverified.

use blake3::hazmat::{left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode};

use crate::blob::BlobId;

/// Bytes covered by one chaining value.
pub const CHUNK: u64 = 1 << 20;

/// Number of chunks of a blob of `len` bytes.
pub fn chunks(len: u64) -> u64 {
    len.div_ceil(CHUNK)
}

/// Chaining value of the chunk starting at `offset` (a multiple of `CHUNK`).
pub fn chunk_cv(offset: u64, chunk: &[u8]) -> ChainingValue {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(chunk);
    h.finalize_non_root()
}

/// Chaining values of every chunk of `data` (which must be longer than one chunk).
pub fn table(data: &[u8]) -> Vec<ChainingValue> {
    data.chunks(CHUNK as usize).enumerate().map(|(i, c)| chunk_cv(i as u64 * CHUNK, c)).collect()
}

fn subtree(cvs: &[ChainingValue], len: u64) -> ChainingValue {
    if len <= CHUNK {
        return cvs[0];
    }
    let left = left_subtree_len(len);
    let nl = (left / CHUNK) as usize;
    merge_subtrees_non_root(&subtree(&cvs[..nl], left), &subtree(&cvs[nl..], len - left), Mode::Hash)
}

/// The blob id the table proves for a blob of `len` bytes, or `None` when the table does not
/// have one value per chunk or the blob fits in one chunk (then there is nothing to prove).
pub fn root(cvs: &[ChainingValue], len: u64) -> Option<BlobId> {
    if len <= CHUNK || cvs.len() as u64 != chunks(len) {
        return None;
    }
    let left = left_subtree_len(len);
    let nl = (left / CHUNK) as usize;
    let hash = merge_subtrees_root(&subtree(&cvs[..nl], left), &subtree(&cvs[nl..], len - left), Mode::Hash);
    Some(BlobId(*hash.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_prove_the_blob_id_for_odd_and_even_sizes() {
        for len in [CHUNK + 1, 2 * CHUNK, 3 * CHUNK - 7, 5 * CHUNK, 8 * CHUNK + 123] {
            let data: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
            let cvs = table(&data);
            assert_eq!(root(&cvs, len), Some(BlobId::of(&data)), "len {len}");
            let mut bad = cvs.clone();
            bad[0][0] ^= 1;
            assert_ne!(root(&bad, len), Some(BlobId::of(&data)));
            // a single chunk verifies on its own
            let i = cvs.len() - 1;
            let start = i as u64 * CHUNK;
            assert_eq!(chunk_cv(start, &data[start as usize..]), cvs[i]);
        }
        assert_eq!(root(&[], CHUNK), None);
    }
}
