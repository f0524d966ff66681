//! Verifying chunks as a download streams in: a ranged GET's body is written into a
//! [`ChunkSink`], which writes the bytes where they belong in the fetch file, hashes them
//! incrementally, and makes each 1 MiB chunk readable once its hash matches its proof — no
//! per-range buffers and no extra copy, and the first chunk of a range is readable before
//! the range has finished.

use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::blob::BlobId;
use crate::codec;
use crate::proof::{self, CHUNK};
use crate::tiers::fetch::Fetch;
use crate::tiers::StoreError;

/// Verify the whole chunks in `data` (which starts at chunk `first`; the blob's last chunk may
/// be short) against their proofs, write them into the fetch file and make them readable.
/// Returns how many chunks were stored.
pub fn store_chunks(fetch: &Fetch, table: &[[u8; 32]], first: usize, data: &[u8], id: BlobId) -> Result<usize, StoreError> {
    let mut stored = 0;
    for (k, bytes) in data.chunks(CHUNK as usize).enumerate() {
        let i = first + k;
        if bytes.len() as u64 != chunk_len(fetch, i) || i >= table.len() {
            break;
        }
        store_chunk(fetch, table, i, bytes, id)?;
        stored += 1;
    }
    Ok(stored)
}

fn chunk_len(fetch: &Fetch, i: usize) -> u64 {
    CHUNK.min(fetch.len.saturating_sub(i as u64 * CHUNK))
}

fn store_chunk(fetch: &Fetch, table: &[[u8; 32]], i: usize, bytes: &[u8], id: BlobId) -> Result<(), StoreError> {
    let offset = i as u64 * CHUNK;
    if proof::chunk_cv(offset, bytes) != table[i] {
        return Err(StoreError::Corrupt { id, source: codec::CodecError::Malformed("a chunk does not match its proof") });
    }
    fetch.file.write_all_at(bytes, offset).map_err(|e| StoreError::io("write fetched blob", e))?;
    fetch.mark(i);
    Ok(())
}

/// An `AsyncWrite` receiving the payload bytes of chunks `[next, end)`, in order. Bytes go
/// straight into the fetch file (not yet readable) and into an incremental hash of their
/// chunk; a chunk becomes readable only once its chaining value matches its proof.
pub struct ChunkSink<'a> {
    fetch: &'a Fetch,
    table: &'a [[u8; 32]],
    id: BlobId,
    next: usize,
    end: usize,
    /// bytes of chunk `next` received so far
    filled: u64,
    hasher: blake3::Hasher,
    /// why the last write failed (the io::Error handed to the HTTP client loses the type)
    pub error: Option<StoreError>,
}

fn chunk_hasher(i: usize) -> blake3::Hasher {
    use blake3::hazmat::HasherExt;
    let mut h = blake3::Hasher::new();
    h.set_input_offset(i as u64 * CHUNK);
    h
}

impl<'a> ChunkSink<'a> {
    /// A sink for chunks `[first, end)` of `fetch`.
    pub fn new(fetch: &'a Fetch, table: &'a [[u8; 32]], id: BlobId, first: usize, end: usize) -> Self {
        ChunkSink { fetch, table, id, next: first, end, filled: 0, hasher: chunk_hasher(first), error: None }
    }

    /// Whether every chunk of the range arrived (and was verified).
    pub fn finished(&self) -> bool {
        self.next == self.end && self.filled == 0
    }

    fn accept(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        use blake3::hazmat::HasherExt;
        while !data.is_empty() {
            if self.next >= self.end || self.next >= self.table.len() {
                return Err(StoreError::io("ranged GET", std::io::Error::other("more bytes than the range asked for")));
            }
            let want = chunk_len(self.fetch, self.next) - self.filled;
            let take = want.min(data.len() as u64) as usize;
            let at = self.next as u64 * CHUNK + self.filled;
            self.fetch.file.write_all_at(&data[..take], at).map_err(|e| StoreError::io("write fetched blob", e))?;
            self.hasher.update(&data[..take]);
            self.filled += take as u64;
            data = &data[take..];
            if self.filled == chunk_len(self.fetch, self.next) {
                if self.hasher.finalize_non_root() != self.table[self.next] {
                    return Err(StoreError::Corrupt { id: self.id, source: codec::CodecError::Malformed("a chunk does not match its proof") });
                }
                self.fetch.mark(self.next);
                self.next += 1;
                self.filled = 0;
                self.hasher = chunk_hasher(self.next);
            }
        }
        Ok(())
    }
}

impl tokio::io::AsyncWrite for ChunkSink<'_> {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.accept(data) {
            Ok(()) => Poll::Ready(Ok(data.len())),
            Err(e) => {
                let msg = e.to_string();
                self.error = Some(e);
                Poll::Ready(Err(std::io::Error::other(msg)))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// An `AsyncWrite` that writes a body at its offset in a file, `pwrite` by `pwrite`, counting
/// the bytes: a ranged GET streams through it without holding its body in memory.
pub struct AtOffset<'a> {
    file: &'a std::fs::File,
    /// next file offset
    pub offset: u64,
    /// bytes written so far
    pub written: u64,
}

impl<'a> AtOffset<'a> {
    /// Write from `offset` on.
    pub fn new(file: &'a std::fs::File, offset: u64) -> Self {
        AtOffset { file, offset, written: 0 }
    }
}

impl tokio::io::AsyncWrite for AtOffset<'_> {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        use std::os::unix::fs::FileExt;
        let at = self.offset;
        self.file.write_all_at(data, at)?;
        self.offset += data.len() as u64;
        self.written += data.len() as u64;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
