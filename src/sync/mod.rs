//! Sharing one bucket between nodes, without FUSE: the change records nodes publish
//! ([`change`]), the name table rebuilt from a bucket ([`names`], the library's `restore`),
//! and the collector of unreferenced blobs ([`gc`]).

pub mod apply;
pub mod change;
pub mod feed;
pub mod gc;
pub mod names;
pub mod snapshot;
