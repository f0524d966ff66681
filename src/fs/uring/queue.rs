//! One io_uring queue of FUSE over io_uring: the kernel hands a request to a registered ring
//! entry (its header and payload buffers) and completes the entry's command; the reply goes
//! back in the same buffers with a `COMMIT_AND_FETCH` command, which also hands the entry
//! back for the next request. One thread per queue waits for completions, serves them and
//! submits every command: io_uring ties a command to the thread that submitted it and cancels
//! it when that thread exits, so a reply made on another thread (a request that waits on the
//! network, or an open that waits for releases) is only pushed onto the queue's submission
//! ring, under its lock, and the queue's thread is woken through an eventfd to submit it.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// `struct fuse_uring_req_header`: `in_out` (the in or out header), `op_in` (the op's own
/// header), then `struct fuse_uring_ent_in_out`.
const HEADER_SIZE: usize = 288;
const OP_IN: usize = 128;
const OP_IN_SIZE: usize = 128;
const ENT_COMMIT_ID: usize = 264;
const ENT_PAYLOAD_SZ: usize = 272;

/// `enum fuse_uring_cmd`
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;

/// The completion of the queue's wake-up poll (entries use their index).
const WAKE: u64 = u64::MAX;

/// A zeroed, page-aligned buffer the kernel reads and writes while an entry's command is in
/// flight (so it never moves).
struct Buf {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: the buffer is plain memory; who touches it when is serialized by the entry's
// protocol (the kernel while the command is in flight, then the one thread serving it).
unsafe impl Send for Buf {}
unsafe impl Sync for Buf {}

impl Buf {
    fn new(size: usize) -> Buf {
        let layout = Layout::from_size_align(size.max(4096), 4096).expect("buffer layout");
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Buf { ptr, layout }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

struct Slot {
    header: Buf,
    payload: Buf,
    payload_size: usize,
    /// the two iovecs REGISTER points the kernel at
    iov: Box<[libc::iovec; 2]>,
}

/// One queue (`qid`) of the mount's ring: its io_uring, its entries, and the lock that
/// serializes pushing onto its submission ring.
pub struct Queue {
    qid: u16,
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    push: Mutex<()>,
    dev: i32,
    slots: Vec<Slot>,
    /// written by a thread that pushed a reply: the queue's thread wakes and submits it
    wake: OwnedFd,
}

// SAFETY: the submission ring is only touched under `push`, the completion ring only by the
// queue's own thread ([`Queue::serve`]); slots are owned by whoever holds their request.
unsafe impl Send for Queue {}
unsafe impl Sync for Queue {}

/// A request as it arrived in a ring entry.
pub struct Arrived<'a> {
    /// `struct fuse_in_header`
    pub header: &'a [u8],
    /// the op's own header (`fuse_open_in`, …)
    pub op: &'a [u8],
    /// names and data
    pub payload: &'a [u8],
}

impl Queue {
    /// A queue with `depth` entries of `payload_size`-byte payloads on device `dev` (which
    /// must outlive it).
    pub fn new(qid: u16, depth: usize, payload_size: usize, dev: &OwnedFd) -> std::io::Result<Queue> {
        // an SQE per entry and one for the wake-up poll
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder().setup_cqsize(2 * depth as u32 + 2).build(depth as u32 + 1)?;
        // SAFETY: eventfd returns a new descriptor or -1.
        let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if wake < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor we own from here on.
        let wake = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(wake) };
        let slots = (0..depth)
            .map(|_| {
                let (header, payload) = (Buf::new(HEADER_SIZE), Buf::new(payload_size));
                let iov = Box::new([
                    libc::iovec { iov_base: header.ptr.cast(), iov_len: HEADER_SIZE },
                    libc::iovec { iov_base: payload.ptr.cast(), iov_len: payload_size },
                ]);
                Slot { header, payload, payload_size, iov }
            })
            .collect();
        Ok(Queue { qid, ring, push: Mutex::new(()), dev: dev.as_raw_fd(), slots, wake })
    }

    fn command(&self, slot: usize, cmd: u32, commit_id: u64) -> squeue::Entry128 {
        // struct fuse_uring_cmd_req: flags, commit_id, qid
        let mut req = [0u8; 80];
        req[8..16].copy_from_slice(&commit_id.to_le_bytes());
        req[16..18].copy_from_slice(&self.qid.to_le_bytes());
        let mut op = opcode::UringCmd80::new(types::Fd(self.dev), cmd).cmd(req);
        if cmd == CMD_REGISTER {
            op = op.addr(Some(self.slots[slot].iov.as_ptr() as u64));
        }
        let mut e = op.build().user_data(slot as u64);
        if cmd == CMD_REGISTER {
            // the kernel reads the iovec count from the SQE's `len`, which io-uring's
            // UringCmd80 does not set: `struct io_uring_sqe` has it at byte 24
            const _: () = assert!(std::mem::size_of::<squeue::Entry128>() == 128);
            // SAFETY: Entry128 is repr(C), a 64-byte io_uring_sqe then its 64-byte extension.
            unsafe { (&mut e as *mut squeue::Entry128).cast::<u8>().add(24).cast::<u32>().write_unaligned(2) };
        }
        e
    }

    /// Push a command for the queue's thread to submit (with its next wait).
    fn push(&self, e: squeue::Entry128) -> std::io::Result<()> {
        let _g = self.push.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: pushes are serialized by `push`; the entry's buffers live as long as the queue.
        unsafe {
            let mut sq = self.ring.submission_shared();
            if sq.push(&e).is_err() {
                // one command per entry (and the wake-up poll) is ever outstanding, and the
                // ring has an SQE for each
                return Err(std::io::Error::other("io_uring submission queue full"));
            }
        }
        Ok(())
    }

    /// Wake the queue's thread to submit what was pushed.
    fn wake(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn arm_wake(&self) -> std::io::Result<()> {
        let poll = opcode::PollAdd::new(types::Fd(self.wake.as_raw_fd()), libc::POLLIN as u32).multi(true).build().user_data(WAKE);
        self.push(poll.into())
    }

    /// Register every entry with the kernel (on the queue's own thread).
    pub fn register(&self) -> std::io::Result<()> {
        for slot in 0..self.slots.len() {
            self.push(self.command(slot, CMD_REGISTER, 0))?;
        }
        self.arm_wake()?;
        self.ring.submitter().submit()?;
        Ok(())
    }

    /// Serve requests until the connection ends: `handle(reply, request)` must reply (now or
    /// later, from any thread) through [`Reply`]. A failure says how many requests the queue
    /// had served (none: the kernel refused its entries).
    pub fn serve(self: &Arc<Self>, handle: impl Fn(Reply, Arrived)) -> Result<(), (std::io::Error, u64)> {
        let mut served = 0;
        self.serve_counting(&mut served, handle).map_err(|e| (e, served))
    }

    fn serve_counting(self: &Arc<Self>, served: &mut u64, handle: impl Fn(Reply, Arrived)) -> std::io::Result<()> {
        SERVING.with(|q| q.set(Some(self.qid)));
        // entries the kernel failed a command of: the others keep serving
        let mut lost = 0;
        // the completions of one wait, taken off the ring before any is served
        let mut done: Vec<(u64, i32, u32)> = Vec::with_capacity(self.slots.len() + 1);
        loop {
            match self.ring.submitter().submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            // SAFETY: only this thread reads the completion ring.
            done.extend(unsafe { self.ring.completion_shared() }.map(|c| (c.user_data(), c.result(), c.flags())));
            for (data, res, flags) in done.drain(..) {
                if data == WAKE {
                    let mut n = 0u64;
                    // SAFETY: reads 8 bytes into a live u64 (non-blocking; resets the count).
                    unsafe { libc::read(self.wake.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
                    if !cqueue::more(flags) {
                        self.arm_wake()?;
                    }
                    continue;
                }
                let slot = data as usize;
                match res {
                    0 => {}
                    r if r == -libc::EAGAIN || r == -libc::EINTR => {
                        // the kernel has not taken the INIT reply in yet: register again
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        self.push(self.command(slot, CMD_REGISTER, 0))?;
                        continue;
                    }
                    r if r == -libc::ENOTCONN || r == -libc::ECONNABORTED || r == -libc::ENODEV || r == -libc::ECANCELED => return Ok(()),
                    r => {
                        let e = std::io::Error::from_raw_os_error(-r);
                        tracing::error!(qid = self.qid, slot, error = %e, "io_uring: the kernel failed an entry's command; the queue goes on without it");
                        lost += 1;
                        if lost == self.slots.len() {
                            return Err(e);
                        }
                        continue;
                    }
                }
                let s = &self.slots[slot];
                // SAFETY: the kernel completed this entry's command: its buffers are ours
                // until the reply commits them.
                let (header, payload) = unsafe { (std::slice::from_raw_parts(s.header.ptr, HEADER_SIZE), std::slice::from_raw_parts(s.payload.ptr, s.payload_size)) };
                let ent = crate::fs::uring::wire::Fields(header);
                let payload_len = (ent.u32(ENT_PAYLOAD_SZ) as usize).min(s.payload_size);
                let unique = ent.u64(8);
                let reply = Reply { queue: self.clone(), slot, unique, commit_id: ent.u64(ENT_COMMIT_ID), sent: false };
                crate::metrics::get().fuse_uring_requests.inc();
                *served += 1;
                let req = Arrived { header: &header[..40], op: &header[OP_IN..OP_IN + OP_IN_SIZE], payload: &payload[..payload_len] };
                // a handler that panics has its reply answer EIO as it unwinds (logged by the
                // panic hook); the queue serves on
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(reply, req)));
            }
        }
    }
}

/// The reply to one request: written into its entry and committed to the kernel, once. An
/// unsent reply answers `EIO` when dropped, so the caller is never left waiting.
pub struct Reply {
    queue: Arc<Queue>,
    slot: usize,
    unique: u64,
    commit_id: u64,
    sent: bool,
}

impl Reply {
    /// The entry's payload buffer, to write the reply into. The request's own payload (names,
    /// write data) is in the same buffer: read it before writing here.
    pub fn payload(&mut self) -> &mut [u8] {
        let s = &self.queue.slots[self.slot];
        // SAFETY: the entry belongs to this reply until it is committed.
        unsafe { std::slice::from_raw_parts_mut(s.payload.ptr, s.payload_size) }
    }

    /// Commit: `len` bytes of payload, or an errno (then no payload).
    pub fn send(mut self, result: Result<usize, i32>) {
        self.commit(result)
    }

    /// Answer with an errno.
    pub fn error(self, errno: i32) {
        self.send(Err(errno))
    }

    fn commit(&mut self, result: Result<usize, i32>) {
        self.sent = true;
        let (error, len) = match result {
            Ok(len) => (0i32, len),
            Err(e) => (-e.abs(), 0),
        };
        let s = &self.queue.slots[self.slot];
        // SAFETY: as in `payload`; struct fuse_out_header is len, error, unique.
        let header = unsafe { std::slice::from_raw_parts_mut(s.header.ptr, HEADER_SIZE) };
        header[0..4].copy_from_slice(&((16 + len) as u32).to_le_bytes());
        header[4..8].copy_from_slice(&error.to_le_bytes());
        header[8..16].copy_from_slice(&self.unique.to_le_bytes());
        header[ENT_PAYLOAD_SZ..ENT_PAYLOAD_SZ + 4].copy_from_slice(&(len as u32).to_le_bytes());
        let e = self.queue.command(self.slot, CMD_COMMIT_AND_FETCH, self.commit_id);
        if let Err(e) = self.queue.push(e) {
            tracing::error!(qid = self.queue.qid, error = %e, "io_uring: a reply could not be committed");
        }
        // a reply made on the queue's own thread is submitted with its next wait
        if SERVING.with(|q| q.get()) != Some(self.queue.qid) {
            self.queue.wake();
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.sent {
            self.commit(Err(libc::EIO));
        }
    }
}

thread_local! {
    /// the queue this thread serves
    static SERVING: std::cell::Cell<Option<u16>> = const { std::cell::Cell::new(None) };
}
