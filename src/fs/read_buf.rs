//! Reply buffers of READ requests, reused.
//!
//! A READ answers up to 1 MiB (the mount's readahead). A fresh 1 MiB buffer is a new `mmap`
//! (the allocator maps every buffer over 256 KiB, `sys::bound_allocator`), 256 page faults
//! and zeroed pages while `pread` fills it, and a `munmap` after the reply: perf of a cold
//! 256 MiB read put a sixth of the daemon's time in those faults. Buffers go back to a small
//! pool when the reply is sent, so the memory held is bounded: at most [`KEPT`] buffers of at
//! most [`MAX_KEPT`] bytes.

use std::ops::Deref;
use std::sync::Mutex;

/// Buffers kept for reuse (one per READ in flight is enough: FUSE threads plus the waiters).
pub const KEPT: usize = 8;
/// Largest buffer kept: a READ of the mount's largest size.
pub const MAX_KEPT: usize = 1 << 20;

/// A pool of reply buffers.
pub struct Pool(Mutex<Vec<Vec<u8>>>);

/// The daemon's pool.
pub static POOL: Pool = Pool::new();

impl Pool {
    /// An empty pool.
    pub const fn new() -> Self {
        Pool(Mutex::new(Vec::new()))
    }

    /// An empty buffer, from the pool when one is free.
    pub fn take(&'static self) -> ReadBuf {
        let v = self.lock().pop().unwrap_or_default();
        ReadBuf(v, Some(self))
    }

    /// Buffers in the pool now.
    pub fn kept(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

/// A READ's bytes, in a buffer that returns to its pool when dropped.
#[derive(Default)]
pub struct ReadBuf(Vec<u8>, Option<&'static Pool>);

impl ReadBuf {
    /// An empty buffer from the daemon's pool.
    pub fn take() -> Self {
        POOL.take()
    }

    /// The buffer to fill (cleared).
    pub fn vec(&mut self) -> &mut Vec<u8> {
        self.0.clear();
        &mut self.0
    }

    /// The bytes, out of the pool's reach.
    pub fn into_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

impl Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        let mut v = std::mem::take(&mut self.0);
        let Some(pool) = self.1 else { return };
        v.clear();
        if v.capacity() == 0 || v.capacity() > MAX_KEPT {
            return;
        }
        let mut bufs = pool.lock();
        if bufs.len() < KEPT {
            bufs.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_the_pool_stays_bounded() {
        let pool: &'static Pool = Box::leak(Box::new(Pool::new()));
        let mut a = pool.take();
        a.vec().extend_from_slice(&[7u8; 4096]);
        let ptr = a.0.as_ptr();
        drop(a);
        assert_eq!(pool.kept(), 1);
        let mut b = pool.take();
        assert!(b.is_empty(), "a reused buffer comes back empty");
        assert_eq!(b.vec().as_ptr(), ptr, "the freed buffer is handed out again");
        drop(b);
        // more buffers than the pool keeps
        let many: Vec<ReadBuf> = (0..KEPT + 4)
            .map(|_| {
                let mut r = pool.take();
                r.vec().reserve(4096);
                r
            })
            .collect();
        drop(many);
        assert_eq!(pool.kept(), KEPT);
        // a buffer too large to keep
        let held: Vec<ReadBuf> = (0..KEPT).map(|_| pool.take()).collect();
        assert_eq!(pool.kept(), 0);
        let mut big = pool.take();
        big.vec().reserve(MAX_KEPT + 1);
        drop(big);
        assert_eq!(pool.kept(), 0, "an oversized buffer is not kept");
        drop(held);
        // into_vec takes the bytes out of the pool's reach
        let mut c = pool.take();
        c.vec().extend_from_slice(b"bytes");
        assert_eq!(c.into_vec(), b"bytes");
        assert_eq!(pool.kept(), KEPT - 1);
    }
}
