//! Following the other nodes of a shared bucket: their journal batches, found through the
//! change feed ([`crate::sync::feed`]), applied to this node's tree ([`crate::fs::peers`]).
//!
//! A poll lists the feed start-after (this node's clock at its previous poll − the window),
//! GETs the batch of every marker that is next for its node and applies it; a marker that
//! shows a gap (a batch that was missed, or a heartbeat ahead of the cursor) makes it list
//! that one journal after its cursor. One LIST per poll, whatever the number of nodes, plus
//! one GET per new batch. The first poll, and any poll after the feed was unreadable for
//! [`feed::RESWEEP_AFTER`], sweeps instead: `nodes/` and every journal after its cursor.
//! Between polls the interval doubles while nothing moves, up to the idle maximum.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fs::namespace::Namespace;
use crate::sync::change::{self, Batch};
use crate::sync::feed::{self, Marker, Step};
use crate::sync::names;
use crate::tiers::StoreError;

/// What one poll did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Polled {
    /// changes applied
    pub applied: usize,
    /// another node published something (a batch, applied or not)
    pub moved: bool,
    /// the poll swept every journal instead of reading the feed
    pub swept: bool,
}

fn config_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Config(e.to_string())
}

impl Namespace {
    /// Apply every other node's batches published since the last poll; returns how many
    /// changes were applied.
    pub async fn poll_once(&self) -> Result<usize, StoreError> {
        Ok(self.poll().await?.applied)
    }

    /// One poll of the other nodes (see the module doc).
    pub async fn poll(&self) -> Result<Polled, StoreError> {
        let (start_ms, start) = (change::now_ms(), Instant::now());
        let from = self.feed_state().read_from;
        let res = match from.filter(|(_, at)| at.elapsed() < feed::RESWEEP_AFTER) {
            Some((ms, _)) => self.follow_feed(ms).await,
            None => self.sweep().await,
        };
        if res.is_ok() {
            self.feed_state().read_from = Some((start_ms, start));
        }
        res
    }

    /// Every registered node's journal after this node's cursor for it.
    async fn sweep(&self) -> Result<Polled, StoreError> {
        let me = self.node_id();
        let mut polled = Polled { swept: true, ..Polled::default() };
        for node in names::nodes(self.store.objects().as_ref()).await?.into_iter().filter(|n| *n != me) {
            polled.applied += self.catch_up(&node).await?;
        }
        polled.moved = polled.applied > 0;
        Ok(polled)
    }

    fn cursor_of(&self, node: &str) -> u64 {
        self.read_tree().outbox.cursors.get(node).copied().unwrap_or(0)
    }

    /// List `node`'s journal after this node's cursor for it and apply every batch.
    async fn catch_up(&self, node: &str) -> Result<usize, StoreError> {
        let batches = names::batches_after(self.store.objects().as_ref(), node, self.cursor_of(node)).await?;
        let many = batches.len() > 10;
        let mut applied = 0;
        for (i, batch) in batches.iter().enumerate() {
            applied += self.apply_peer_batch(node, batch).map_err(config_error)?;
            if many && (i + 1) % 100 == 0 {
                tracing::info!(node, batches = i + 1, of = batches.len(), "applying another node's changes");
            }
        }
        Ok(applied)
    }

    /// The markers stamped after `since_ms` − the window, each acted on in order.
    async fn follow_feed(&self, since_ms: u64) -> Result<Polled, StoreError> {
        let objects = self.store.objects().clone();
        let me = self.node_id();
        let keys = objects.list_meta_after(feed::FEED, &feed::after(since_ms.saturating_sub(feed::WINDOW.as_millis() as u64))).await?;
        let mut polled = Polled::default();
        for m in keys.iter().filter_map(|k| Marker::parse(k)).filter(|m| m.node != me) {
            match feed::step(&m, self.cursor_of(&m.node)) {
                Step::Skip => continue,
                Step::Get(key) => {
                    polled.moved = true;
                    let batch = match objects.get_meta(&key).await {
                        Ok(env) => Batch::open(&env).map_err(|why| config_error(format!("{key}: {why}")))?,
                        // compacted or overwritten since: the journal itself says what is there
                        Err(e) if e.is_missing() => {
                            polled.applied += self.catch_up(&m.node).await?;
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    if batch.node != m.node {
                        return Err(config_error(format!("{key} holds changes of another node")));
                    }
                    polled.applied += self.apply_peer_batch(&m.node, &batch).map_err(config_error)?;
                }
                Step::CatchUp => {
                    polled.moved = true;
                    crate::metrics::get().feed_catch_ups.inc();
                    tracing::debug!(node = %m.node, marker = %m.key(), "a feed marker is ahead of this node's cursor: reading that journal");
                    polled.applied += self.catch_up(&m.node).await?;
                }
            }
        }
        Ok(polled)
    }

    /// The poller: polls until `stop`, every `base` while the fleet moves, backing off up to
    /// `idle_max` while it does not.
    pub async fn poll_loop(self: Arc<Self>, base: Duration, idle_max: Duration, stop: Arc<AtomicBool>) {
        let mut interval = base;
        while !stop.load(Ordering::SeqCst) {
            let moved = match self.poll().await {
                Ok(p) => {
                    if p.applied > 0 {
                        tracing::debug!(changes = p.applied, swept = p.swept, "applied changes from other nodes");
                    }
                    p.moved
                }
                Err(e) => {
                    tracing::warn!(error = %e, "following the other nodes' changes failed; will retry");
                    true // retry at the base interval
                }
            };
            interval = feed::next_interval(interval, base, idle_max, moved);
            tokio::time::sleep(interval).await;
        }
    }
}
