//! The whole index written to one file at a clean close, so the next open reads it instead of
//! scanning SlateDB (a million names: 3M records, 3.5 s through SlateDB's merge iterator).
//!
//! `<index dir>/checkpoint`: `WICP`, format u32 LE (1), a 16-byte token, then one zstd frame
//! of records (key length u32 LE, value length u32 LE, key, value), then the record count u64
//! LE and the BLAKE3 hash of every byte before it. The close commits the token to SlateDB
//! (`m checkpoint`) as its last write; the open uses the file only if the token SlateDB holds
//! is the file's and no intent log had to be replayed, i.e. SlateDB changed in no way since the
//! file was written. The file is removed when it is read, before anything is committed: after
//! a crash there is none, and the index is scanned.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::Records;

const MAGIC: &[u8; 4] = b"WICP";
const FORMAT: u32 = 1;
/// Bytes before the records: magic, format, token.
const HEADER: usize = 24;

/// A checkpoint's token: ties the file to the SlateDB state it was written beside.
pub type Token = [u8; 16];

fn path(dir: &Path) -> PathBuf {
    dir.join("checkpoint")
}

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

/// Hashes what it writes.
struct Hashing<W: Write> {
    inner: W,
    hash: blake3::Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.hash.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a checkpoint's records as they are handed over.
pub struct Writer {
    enc: zstd::stream::write::Encoder<'static, Hashing<BufWriter<File>>>,
    count: u64,
    failed: Option<io::Error>,
}

impl Writer {
    fn create(tmp: &Path, token: &Token) -> io::Result<Self> {
        let mut out = Hashing { inner: BufWriter::new(File::create(tmp)?), hash: blake3::Hasher::new() };
        out.write_all(MAGIC)?;
        out.write_all(&FORMAT.to_le_bytes())?;
        out.write_all(token)?;
        Ok(Writer { enc: zstd::stream::write::Encoder::new(out, 1)?, count: 0, failed: None })
    }

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

    fn finish(self) -> io::Result<File> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let mut out = self.enc.finish()?;
        out.write_all(&self.count.to_le_bytes())?;
        let sum = out.hash.finalize();
        out.inner.write_all(sum.as_bytes())?;
        out.inner.into_inner().map_err(|e| e.into_error())
    }
}

/// Write a checkpoint: `fill` hands every record to the writer; the file is synced and renamed
/// into place only if all of it was written.
pub fn save(dir: &Path, token: &Token, fill: impl FnOnce(&mut Writer)) -> io::Result<u64> {
    let tmp = dir.join("checkpoint.tmp");
    let mut w = Writer::create(&tmp, token)?;
    fill(&mut w);
    let count = w.count;
    let f = w.finish()?;
    f.sync_all()?;
    fs::rename(&tmp, path(dir))?;
    File::open(dir)?.sync_all()?;
    Ok(count)
}

/// Remove a checkpoint (and a half-written one): done at every open, before anything changes.
pub fn remove(dir: &Path) -> io::Result<()> {
    for p in [path(dir), dir.join("checkpoint.tmp")] {
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    File::open(dir)?.sync_all()
}

/// Read the checkpoint if there is one, it checks out and its token is `token`.
pub fn read(dir: &Path, token: &Token) -> Option<Records> {
    let mut bytes = Vec::new();
    match File::open(path(dir)).and_then(|mut f| f.read_to_end(&mut bytes)) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the index checkpoint; scanning the index");
            return None;
        }
    }
    let records = decode(&bytes, token);
    if records.is_none() {
        tracing::warn!("the index checkpoint is damaged or from another close; scanning the index");
    }
    records
}

fn decode(b: &[u8], token: &Token) -> Option<Records> {
    let (body, sum) = b.split_at_checked(b.len().checked_sub(32)?)?;
    if blake3::hash(body).as_bytes() != sum || body.get(..4)? != MAGIC || body.get(4..8)? != FORMAT.to_le_bytes() || body.get(8..HEADER)? != token {
        return None;
    }
    let (frame, count) = body[HEADER..].split_at_checked(body.len().checked_sub(HEADER + 8)?)?;
    let count = usize::try_from(u64::from_le_bytes(count.try_into().ok()?)).ok()?;
    let raw = zstd::stream::decode_all(frame).ok()?;
    let mut records = Vec::with_capacity(count);
    let mut rest = raw.as_slice();
    while !rest.is_empty() {
        let (kl, vl) = (u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize, u32::from_le_bytes(rest.get(4..8)?.try_into().ok()?) as usize);
        let k = rest.get(8..8 + kl)?;
        let v = rest.get(8 + kl..8 + kl + vl)?;
        records.push((k.to_vec(), v.to_vec()));
        rest = &rest[8 + kl + vl..];
    }
    (records.len() == count).then_some(records)
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
        let good = fs::read(path(d.path())).unwrap();
        for i in [0, 5, HEADER + 2, good.len() / 2, good.len() - 40, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            fs::write(path(d.path()), &bad).unwrap();
            assert_eq!(read(d.path(), &token), None, "a flipped bit at {i}");
        }
        for n in [0, 10, good.len() - 1] {
            fs::write(path(d.path()), &good[..n]).unwrap();
            assert_eq!(read(d.path(), &token), None, "cut to {n} bytes");
        }
    }
}
