//! FUSE over io_uring (Linux 6.14+, `/sys/module/fuse/parameters/enable_uring`): the
//! transport that replaces the `read` and `writev` of `/dev/fuse` with a per-CPU queue of
//! ring entries. The kernel puts a request into a free entry of the queue of the CPU its
//! caller runs on and completes that entry's command; the queue's thread serves it and
//! commits the reply with the same submission that hands the entry back
//! (`COMMIT_AND_FETCH`), so a request costs one wake-up of the server and one of the caller
//! instead of a sleep in `read` and a wake-up per reply.
//!
//! fuser 0.18 has no such transport, so the mount is still made, and `FUSE_INIT` answered,
//! by fuser on `/dev/fuse` (asking for `FUSE_OVER_IO_URING`); once the kernel accepted it,
//! one queue per possible CPU registers its entries on the session's descriptor, and when
//! every queue has one, the kernel sends every request there except forgets and interrupts,
//! which stay on `/dev/fuse` with fuser. Requests are decoded here ([`wire`]) and served with
//! the same core calls as fuser's adapter ([`serve`]).

pub mod queue;
pub mod serve;
pub mod wire;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::fs::uring::queue::Queue;
use crate::fs::uring::serve::Server;

/// Entries per queue: requests one CPU's callers can have in the daemon at once (more wait
/// in the kernel for a free entry).
pub const DEPTH: usize = 16;

/// Whether the kernel accepted FUSE over io_uring at `FUSE_INIT`.
#[derive(Default)]
pub struct Negotiated {
    state: Mutex<Option<bool>>,
    told: Condvar,
}

impl Negotiated {
    /// At `FUSE_INIT`: whether the kernel offered io_uring (it does only with
    /// `enable_uring` on).
    pub fn offer(&self, accepted: bool) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(accepted);
        self.told.notify_all();
    }

    /// What `FUSE_INIT` said, waiting up to `timeout` for it.
    pub fn wait(&self, timeout: Duration) -> Option<bool> {
        let g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (g, _) = self.told.wait_timeout_while(g, timeout, |s| s.is_none()).unwrap_or_else(|p| p.into_inner());
        *g
    }
}

/// The number of queues the kernel expects: one per possible CPU.
pub fn queues() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    n.max(1) as usize
}

/// Start one queue per possible CPU on `dev`, each served by its own thread (pinned to its
/// CPU); returns once every queue registered its entries. `payload` is the largest request
/// or reply body (the mount's `max_write` and `max_pages`).
pub fn start(server: Arc<Server>, payload: usize) -> std::io::Result<()> {
    let n = queues();
    let (tx, rx) = std::sync::mpsc::channel();
    for qid in 0..n {
        let (server, dev, tx) = (server.clone(), server.dev.clone(), tx.clone());
        std::thread::Builder::new().name(format!("wombatfs-ring{qid}")).spawn(move || {
            pin_to(qid);
            let queue = match Queue::new(qid as u16, DEPTH, payload, &dev).and_then(|q| {
                q.register()?;
                Ok(Arc::new(q))
            }) {
                Ok(q) => {
                    let _ = tx.send(Ok(()));
                    q
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            match queue.serve(|reply, req| server.handle(reply, req)) {
                Ok(()) => tracing::debug!(qid, "io_uring queue: the connection ended"),
                Err((e, 0)) => {
                    // the kernel refused the entries: it never switches to the rings, and
                    // fuser answers everything, passthrough included
                    server.passthrough.set_dev_only(false);
                    tracing::error!(qid, error = %e, "fuse transport: /dev/fuse (the kernel refused an io_uring queue's entries)");
                }
                Err((e, _)) => tracing::error!(qid, error = %e, "io_uring queue stopped; the kernel keeps its requests until the mount ends"),
            }
            // the kernel may still own entries (its buffers) until the connection is torn
            // down: they are never freed, and `dev` stays open with them
            std::mem::forget(queue);
            std::mem::forget(dev);
        })?;
    }
    drop(tx);
    for _ in 0..n {
        rx.recv().map_err(|_| std::io::Error::other("an io_uring queue thread died"))??;
    }
    Ok(())
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu < 1024 {
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                tracing::debug!(cpu, "io_uring queue thread not pinned to its CPU");
            }
        }
    }
}
