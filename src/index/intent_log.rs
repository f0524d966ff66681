//! The intent log: an append-only local file of committed index batches (the index's
//! write-ahead log; not to be confused with the bucket's change journal, `sync::change`).
//!
//! A batch is appended with one `write(2)` before `commit` returns, so it survives `kill -9`
//! of the daemon (the bytes are in the kernel); `sync` (fdatasync) makes it survive loss of the
//! machine's page cache. SlateDB receives the same batches asynchronously; once SlateDB has
//! flushed everything a journal generation holds, that generation file is deleted.
//!
//! Record: `len:u32 LE | check:8 bytes (blake3 prefix of payload) | payload (bincode Vec<Op>)`.
//! A torn or corrupt tail ends replay at the last whole record.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One key-value mutation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Set a key.
    Put(Vec<u8>, Vec<u8>),
    /// Remove a key.
    Delete(Vec<u8>),
}

/// An open intent-log generation.
#[derive(Debug)]
pub struct IntentLog {
    gen: u64,
    file: File,
    bytes: u64,
}

fn gen_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{gen:020}.log"))
}

/// Generation files are `intent-<gen, 20 digits>.log`.
const PREFIX: &str = "intent-";
/// What the directory and its files were called before the rename (read once, renamed).
const LEGACY_DIR: &str = "journal";
const LEGACY_PREFIX: &str = "journal-";

impl IntentLog {
    /// Start a new generation file.
    pub fn create(dir: &Path, gen: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(gen_path(dir, gen))?;
        Ok(IntentLog { gen, file, bytes: 0 })
    }

    /// This generation's number.
    pub fn gen(&self) -> u64 {
        self.gen
    }

    /// Bytes appended to this generation.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Append one batch with a single write.
    pub fn append(&mut self, ops: &[Op]) -> std::io::Result<()> {
        let payload = bincode::serialize(ops).map_err(std::io::Error::other)?;
        let mut rec = Vec::with_capacity(12 + payload.len());
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(&blake3::hash(&payload).as_bytes()[..8]);
        rec.extend_from_slice(&payload);
        self.file.write_all(&rec)?;
        self.bytes += rec.len() as u64;
        Ok(())
    }

    /// fdatasync the file.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Remove a generation file (after SlateDB made it redundant).
    pub fn remove_gen(dir: &Path, gen: u64) -> std::io::Result<()> {
        match fs::remove_file(gen_path(dir, gen)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// An index directory written before the intent log had its name keeps its log in
    /// `journal/journal-<gen>.log`: move it to `dir` (`intent-log/intent-<gen>.log`) before it
    /// is replayed.
    pub fn adopt_legacy(index_dir: &Path, dir: &Path) -> std::io::Result<()> {
        let old = index_dir.join(LEGACY_DIR);
        if !old.is_dir() || dir.exists() {
            return Ok(());
        }
        for e in fs::read_dir(&old)? {
            let name = e?.file_name();
            if let Some(rest) = name.to_string_lossy().strip_prefix(LEGACY_PREFIX) {
                fs::rename(old.join(&name), old.join(format!("{PREFIX}{rest}")))?;
            }
        }
        fs::rename(&old, dir)
    }

    /// Existing generations in `dir`, oldest first.
    pub fn existing(dir: &Path) -> std::io::Result<Vec<u64>> {
        let mut gens = Vec::new();
        for e in fs::read_dir(dir)? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_prefix(PREFIX).and_then(|s| s.strip_suffix(".log")) {
                if let Ok(g) = n.parse() {
                    gens.push(g);
                }
            }
        }
        gens.sort_unstable();
        Ok(gens)
    }

    /// Read every whole record of a generation; stops at a torn or corrupt tail.
    pub fn read_gen(dir: &Path, gen: u64) -> std::io::Result<Vec<Vec<Op>>> {
        let mut buf = Vec::new();
        File::open(gen_path(dir, gen))?.read_to_end(&mut buf)?;
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos + 12 <= buf.len() {
            let len = u32::from_le_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
            let Some(payload) = buf.get(pos + 12..pos + 12 + len) else { break };
            if blake3::hash(payload).as_bytes()[..8] != buf[pos + 4..pos + 12] {
                break;
            }
            match bincode::deserialize::<Vec<Op>>(payload) {
                Ok(ops) => out.push(ops),
                Err(_) => break,
            }
            pos += 12 + len;
        }
        if pos != buf.len() {
            tracing::warn!(gen, valid = pos, total = buf.len(), "intent log tail torn; ignoring the partial record");
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = IntentLog::create(dir.path(), 3).unwrap();
        j.append(&[Op::Put(b"a".to_vec(), b"1".to_vec())]).unwrap();
        j.append(&[Op::Delete(b"a".to_vec()), Op::Put(b"b".to_vec(), vec![])]).unwrap();
        drop(j);
        assert_eq!(IntentLog::existing(dir.path()).unwrap(), vec![3]);
        let recs = IntentLog::read_gen(dir.path(), 3).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1][0], Op::Delete(b"a".to_vec()));
        // tear the last record: only the first survives
        let p = gen_path(dir.path(), 3);
        let len = fs::metadata(&p).unwrap().len();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 3).unwrap();
        assert_eq!(IntentLog::read_gen(dir.path(), 3).unwrap().len(), 1);
        // corrupt a byte of the first payload: nothing survives
        let mut bytes = fs::read(&p).unwrap();
        bytes[14] ^= 0xff;
        fs::write(&p, bytes).unwrap();
        assert_eq!(IntentLog::read_gen(dir.path(), 3).unwrap().len(), 0);
    }
}

#[cfg(test)]
mod legacy {
    use super::*;

    #[test]
    fn a_log_under_its_old_name_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("journal");
        fs::create_dir(&old).unwrap();
        let mut j = IntentLog::create(&old, 7).unwrap();
        j.append(&[Op::Put(b"k".to_vec(), b"v".to_vec())]).unwrap();
        drop(j);
        fs::rename(old.join("intent-00000000000000000007.log"), old.join("journal-00000000000000000007.log")).unwrap();
        let new = dir.path().join("intent-log");
        IntentLog::adopt_legacy(dir.path(), &new).unwrap();
        assert!(!old.exists());
        assert_eq!(IntentLog::existing(&new).unwrap(), vec![7]);
        assert_eq!(IntentLog::read_gen(&new, 7).unwrap().len(), 1);
    }
}
