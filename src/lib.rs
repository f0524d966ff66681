//! wombatfs: a tiered, content-addressed, restart-proof FUSE filesystem for LLM KV caches.
//!
//! The library has three layers, usable without FUSE:
//! - [`store::BlobStore`]: content-addressed blobs in a flat local tier over an object store;
//! - [`index::Index`]: persistent metadata (SlateDB behind an intent log);
//! - [`fs::core::FsCore`]: the filesystem semantics (namespaces, inodes, handles, staging),
//!   driven by the thin FUSE adapter in [`fs::fuse`] or directly by tests;
//! - [`kv::Kv`]: a whole node (tiers, the bucket, the change journal) by `(namespace, key)`,
//!   for engines that embed wombatfs instead of mounting it.

pub mod backoff;
pub mod blob;
pub mod hlc;
pub mod metrics;
pub mod name;
pub mod size;
pub mod sys;
pub mod sealed;
pub mod codec;
pub mod index;
pub mod proof;
pub mod store;
pub mod sync;
pub mod tiers;
pub mod fs;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod admin;
pub mod mount_helper;
pub mod kv;
