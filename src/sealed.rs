//! Files a clean shutdown leaves for the next start, read once: `magic` (4 bytes), format u32
//! LE, a body, then the BLAKE3 hash of everything before it. Written under a temporary name,
//! synced and renamed into place (then the directory synced), so a reader finds the whole
//! file or none; a file that does not check out is refused. The index checkpoint and the
//! flat tier's recency order are two.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

fn tmp(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.tmp"))
}

/// Hashes what it writes.
pub struct Hashing<W: Write> {
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

/// Write `dir/name`: the header, what `body` writes, the hash; replaced only once all of it
/// is on disk.
pub fn write(dir: &Path, name: &str, magic: &[u8; 4], format: u32, body: impl FnOnce(&mut Hashing<BufWriter<File>>) -> io::Result<()>) -> io::Result<()> {
    let tmp = tmp(dir, name);
    let mut out = Hashing { inner: BufWriter::new(File::create(&tmp)?), hash: blake3::Hasher::new() };
    out.write_all(magic)?;
    out.write_all(&format.to_le_bytes())?;
    body(&mut out)?;
    let sum = out.hash.finalize();
    out.inner.write_all(sum.as_bytes())?;
    out.inner.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// The body of a file made by [`write`] with this `magic` and `format`, if `bytes` is one.
pub fn body<'a>(bytes: &'a [u8], magic: &[u8; 4], format: u32) -> Option<&'a [u8]> {
    let (signed, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    let ok = blake3::hash(signed).as_bytes() == sum && signed.get(..4)? == magic && signed.get(4..8)? == format.to_le_bytes();
    ok.then(|| &signed[8..])
}

/// Read `dir/name`; `None` if there is none.
pub fn read(dir: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    match fs::read(dir.join(name)) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Remove `dir/name` and a half-written one, and sync the directory: once this returns, no
/// later start can read what the file said.
pub fn remove(dir: &Path, name: &str) -> io::Result<()> {
    for p in [dir.join(name), tmp(dir, name)] {
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_comes_back_whole_and_any_damage_is_refused() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "f", b"TEST", 3, |w| w.write_all(b"hello body")).unwrap();
        assert!(!d.path().join("f.tmp").exists());
        let good = read(d.path(), "f").unwrap().unwrap();
        assert_eq!(body(&good, b"TEST", 3), Some(&b"hello body"[..]));
        assert_eq!(body(&good, b"TEST", 4), None, "another format");
        assert_eq!(body(&good, b"TSET", 3), None, "another kind of file");
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert_eq!(body(&bad, b"TEST", 3), None, "a flipped bit at {i}");
        }
        for n in 0..good.len() {
            assert_eq!(body(&good[..n], b"TEST", 3), None, "cut to {n} bytes");
        }
        remove(d.path(), "f").unwrap();
        assert_eq!(read(d.path(), "f").unwrap(), None);
    }
}
