//! The whole index written to one file at a clean close, so the next open reads it instead of
//! scanning SlateDB (a million names: 3M records, 3.5 s through SlateDB's merge iterator).
//!
//! `<index dir>/checkpoint`, a [`crate::sealed`] file (`WICP`, format 1) whose body is a
//! 16-byte token, then one zstd frame of records (key length u32 LE, value length u32 LE, key,
//! value), then the record count u64 LE. The close commits the token to SlateDB
//! (`m checkpoint`) as its last write; the open uses the file only if the token SlateDB holds
//! is the file's and no intent log had to be replayed, i.e. SlateDB changed in no way since the
//! file was written. The file is removed when it is read, before anything is committed: after
//! a crash there is none, and the index is scanned.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::Records;
use crate::sealed::{self, Hashing};

const NAME: &str = "checkpoint";
const MAGIC: &[u8; 4] = b"WICP";
const FORMAT: u32 = 1;

/// A checkpoint's token: ties the file to the SlateDB state it was written beside.
pub type Token = [u8; 16];

/// A token no earlier close used.
pub fn new_token(dir: &Path) -> Token {
    let mut h = blake3::Hasher::new();
    h.update(&std::process::id().to_le_bytes());
    h.update(format!("{:?}", std::time::SystemTime::now()).as_bytes());
    h.update(dir.as_os_str().as_encoded_bytes());
    let mut t = Token::default();
    t.copy_from_slice(&h.finalize().as_bytes()[..16]);
    t
}

/// Writes a checkpoint's records as they are handed over.
pub struct Writer<'a> {
    enc: zstd::stream::write::Encoder<'static, &'a mut Hashing<BufWriter<File>>>,
    count: u64,
    failed: Option<io::Error>,
}

impl Writer<'_> {
    /// One record.
    pub fn put(&mut self, k: &[u8], v: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        let r = (|| {
            self.enc.write_all(&(k.len() as u32).to_le_bytes())?;
            self.enc.write_all(&(v.len() as u32).to_le_bytes())?;
            self.enc.write_all(k)?;
            self.enc.write_all(v)
        })();
        match r {
            Ok(()) => self.count += 1,
            Err(e) => self.failed = Some(e),
        }
    }
}

/// Write a checkpoint: `fill` hands every record to the writer; the file replaces any earlier
/// one only if all of it was written. Returns the record count.
pub fn save(dir: &Path, token: &Token, fill: impl FnOnce(&mut Writer<'_>)) -> io::Result<u64> {
    let mut count = 0;
    sealed::write(dir, NAME, MAGIC, FORMAT, |out| {
        out.write_all(token)?;
        let mut w = Writer { enc: zstd::stream::write::Encoder::new(out, 1)?, count: 0, failed: None };
        fill(&mut w);
        if let Some(e) = w.failed {
            return Err(e);
        }
        count = w.count;
        w.enc.finish()?.write_all(&count.to_le_bytes())
    })?;
    Ok(count)
}

/// Remove a checkpoint (and a half-written one): done at every open, before anything changes.
pub fn remove(dir: &Path) -> io::Result<()> {
    sealed::remove(dir, NAME)
}

/// Read the checkpoint if there is one, it checks out and its token is `token`.
pub fn read(dir: &Path, token: &Token) -> Option<Records> {
    let bytes = match sealed::read(dir, NAME) {
        Ok(b) => b?,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the index checkpoint; scanning the index");
            return None;
        }
    };
    let records = sealed::body(&bytes, MAGIC, FORMAT).and_then(|body| decode(body, token));
    if records.is_none() {
        tracing::warn!("the index checkpoint is damaged or from another close; scanning the index");
    }
    records
}

/// The records of a checkpoint's body (token, zstd frame, count) if its token is `token`.
fn decode(body: &[u8], token: &Token) -> Option<Records> {
    let (theirs, rest) = body.split_at_checked(token.len())?;
    if theirs != token {
        return None;
    }
    let (frame, count) = rest.split_at_checked(rest.len().checked_sub(8)?)?;
    let count = usize::try_from(u64::from_le_bytes(count.try_into().ok()?)).ok()?;
    // (the frame holds the records in the layout `Records` keeps them in)
    Records::from_raw(zstd::stream::decode_all(frame).ok()?, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Records {
        (0..1000u32).map(|i| (format!("k{i}").into_bytes(), vec![i as u8; (i % 7) as usize])).collect()
    }

    fn write(dir: &Path, token: &Token, records: &Records) {
        save(dir, token, |w| records.iter().for_each(|(k, v)| w.put(k, v))).unwrap();
    }

    #[test]
    fn records_come_back_only_with_their_token() {
        let d = tempfile::tempdir().unwrap();
        let (token, other) = (new_token(d.path()), [7u8; 16]);
        assert_ne!(token, other);
        write(d.path(), &token, &sample());
        assert_eq!(read(d.path(), &token), Some(sample()));
        assert_eq!(read(d.path(), &other), None, "a checkpoint of another close is not this index");
        remove(d.path()).unwrap();
        assert_eq!(read(d.path(), &token), None);
    }

    #[test]
    fn a_damaged_or_truncated_checkpoint_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let token = new_token(d.path());
        write(d.path(), &token, &sample());
        let good = std::fs::read(d.path().join(NAME)).unwrap();
        // (24 bytes of header: magic, format, token)
        for i in [0, 5, 24 + 2, good.len() / 2, good.len() - 40, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            std::fs::write(d.path().join(NAME), &bad).unwrap();
            assert_eq!(read(d.path(), &token), None, "a flipped bit at {i}");
        }
        for n in [0, 10, good.len() - 1] {
            std::fs::write(d.path().join(NAME), &good[..n]).unwrap();
            assert_eq!(read(d.path(), &token), None, "cut to {n} bytes");
        }
    }
}
