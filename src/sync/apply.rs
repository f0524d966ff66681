//! The rules for applying another node's change — one set, for every namespace that follows
//! a bucket: a mounted node's tree (`fs::peers`) and the library's name table
//! ([`super::names::NameTable`]). They make applying idempotent, keep a stale change from
//! destroying newer data, and make every node converge on the same names whatever order it
//! learns of concurrent changes in.
//!
//! **Versions.** Every file and symlink change carries a version stamp ([`crate::hlc`]): a
//! write (create, rewrite, attribute change, the new name of a rename) a new one, greater than
//! every stamp its node made or saw; a removal (unlink, the old name of a rename) the stamp of
//! the version it removed. Of two writes of one name the greater stamp wins on every node; a
//! removal removes the version it saw and any older one, never a newer one it did not see, and
//! leaves a tombstone (the removed version's stamp) so that an older write arriving after it
//! stays out. A name's state is thus the greatest of (stamp, write or removal) over every change
//! to it — the same on every node once the same changes arrived, in any order.
//!
//! - `File` / `Symlink` (stamped): bound if its stamp is greater than the version here (or than
//!   the tombstone of a missing name); the same content only takes the attributes and the
//!   stamp; a directory of that name stays. Missing parent directories are created. Files
//!   live in namespaces, never at the root.
//! - `Remove` (stamped): removes the file here unless its version is newer; records the
//!   tombstone either way.
//! - `Dir`: created (with missing parents) or its attributes updated; a file of that name stays.
//!   A directory removal removes only an empty directory.
//! - `Rename` (directories; files from writers before stamps): done if the source exists here
//!   and the target may be replaced as `rename(2)` allows (not a directory into itself, a file
//!   over a directory, a directory over a file or a non-empty directory).
//! - Unstamped changes (writers before stamps) follow the older rules: a write binds; a removal
//!   removes a file only if it still holds the blob the remover saw.
//!
//! Not ordered by stamps, on purpose: directories (created where any node creates one, removed
//! only when empty), a name that is a directory on one node and a file on another, and
//! directory renames racing with writes under them. A tombstone is kept for [`TOMB_TTL`]; a
//! write delivered later than that after a removal of a newer version may come back on the
//! nodes that forgot the tombstone.

use crate::blob::BlobId;
use crate::hlc::Stamp;
use crate::sync::change::{self, Attrs, Change};

/// How long a node keeps a removed name's tombstone. Concurrent changes reach every node within
/// seconds while the bucket answers; this covers an outage of the bucket (or a node cut off
/// from it) of up to an hour, at the cost of one small record per name removed in the last hour.
pub const TOMB_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// What a path names, as far as the rules need to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// nothing (or its parent directories are missing)
    Nothing,
    /// a regular file with this content, of this version
    File(BlobId, Stamp),
    /// a symbolic link to this target, of this version
    Symlink(Vec<u8>, Stamp),
    /// a directory
    Dir {
        /// without entries
        empty: bool,
    },
    /// a FIFO, socket or device node of this node's own (never published; a file change
    /// replaces it like any non-directory)
    Special,
}

/// What happened to a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// applied (or already true here)
    Applied,
    /// left out by the rules, with the reason
    Skipped(&'static str),
}

/// A namespace the rules act on. The rules decide *whether*; a target only does what it is
/// told, creating missing parent directories where it binds a name.
pub trait Target {
    /// Why a target could not do what it was told.
    type Error;
    /// What `path` names here.
    fn find(&self, path: &[u8]) -> Result<Found, Self::Error>;
    /// The tombstone of `path` ([`Stamp::ZERO`]: none).
    fn tomb(&self, path: &[u8]) -> Result<Stamp, Self::Error>;
    /// Record the removal of the version `stamp` of `path` (a newer tombstone stays).
    fn set_tomb(&mut self, path: &[u8], stamp: Stamp) -> Result<(), Self::Error>;
    /// Bind `path` (not a directory now) to a file or symlink change's content, as version
    /// `stamp` (dropping a tombstone it supersedes).
    fn bind(&mut self, change: &Change, stamp: Stamp) -> Result<(), Self::Error>;
    /// `path` holds the change's content already: take its attributes (and, for a file or
    /// symlink, the version `stamp`).
    fn set_attrs(&mut self, path: &[u8], attrs: &Attrs, stamp: Stamp) -> Result<(), Self::Error>;
    /// Create the directory `path` or update its attributes.
    fn make_dir(&mut self, path: &[u8], attrs: &Attrs) -> Result<(), Self::Error>;
    /// Remove the file, symlink or empty directory at `path`.
    fn remove(&mut self, path: &[u8]) -> Result<(), Self::Error>;
    /// Move `from` (and what is under it) to `to`, replacing what the rules allowed.
    fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<(), Self::Error>;
}

fn is_within(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// Apply one change, of version `stamp` ([`Stamp::ZERO`] if unstamped), to `t` by the rules
/// above.
pub fn apply<T: Target>(t: &mut T, c: &Change, stamp: Stamp) -> Result<Outcome, T::Error> {
    let skip = |why| Ok(Outcome::Skipped(why));
    let path = match c {
        Change::File { path, .. } | Change::Symlink { path, .. } | Change::Dir { path, .. } | Change::Remove { path, .. } => path,
        Change::Rename { from, .. } => from,
    };
    let Some(parts) = change::components(path) else { return skip("not a valid path") };
    match c {
        Change::File { path, attrs, .. } | Change::Symlink { path, attrs, .. } => {
            if parts.len() < 2 {
                return skip("files live in namespaces, not at the root");
            }
            let found = t.find(path)?;
            if stamp.is_set() {
                match &found {
                    Found::File(_, here) | Found::Symlink(_, here) if stamp <= *here => return skip("a newer version of this name is here"),
                    Found::Nothing if stamp <= t.tomb(path)? => return skip("a newer version of this name was removed"),
                    _ => {}
                }
            }
            match (found, c) {
                (Found::Dir { .. }, _) => skip("a directory has this name here"),
                (Found::File(mine, _), Change::File { blob, .. }) if mine == *blob => t.set_attrs(path, attrs, stamp).map(|()| Outcome::Applied),
                (Found::Symlink(mine, _), Change::Symlink { target, .. }) if mine == *target => t.set_attrs(path, attrs, stamp).map(|()| Outcome::Applied),
                _ => t.bind(c, stamp).map(|()| Outcome::Applied),
            }
        }
        Change::Remove { path, .. } if stamp.is_set() => {
            let outcome = match t.find(path)? {
                Found::Nothing => Outcome::Applied,
                Found::File(_, here) | Found::Symlink(_, here) if here > stamp => return skip("the name here is newer than the version removed"),
                Found::Dir { .. } => return skip("a directory has this name here"),
                _ => {
                    t.remove(path)?;
                    Outcome::Applied
                }
            };
            t.set_tomb(path, stamp)?;
            Ok(outcome)
        }
        Change::Dir { path, attrs } => match t.find(path)? {
            Found::File(..) | Found::Symlink(..) | Found::Special => skip("a file has this name here"),
            _ => t.make_dir(path, attrs).map(|()| Outcome::Applied),
        },
        Change::Remove { path, blob } => match t.find(path)? {
            Found::Nothing => Ok(Outcome::Applied),
            Found::File(mine, _) if blob.is_some_and(|b| b != mine) => skip("the file here has newer content"),
            Found::Dir { empty: false } => skip("the directory here is not empty"),
            _ => t.remove(path).map(|()| Outcome::Applied),
        },
        Change::Rename { from, to } => {
            let Some(to_depth) = change::components(to).map(|p| p.len()) else { return skip("not a valid path") };
            if from == to {
                return Ok(Outcome::Applied);
            }
            let source = t.find(from)?;
            let is_dir = matches!(source, Found::Dir { .. });
            match (&source, t.find(to)?) {
                (Found::Nothing, _) => Ok(Outcome::Applied), // nothing to move here: a no-op, like removing a missing name
                _ if is_dir && is_within(to, from) => skip("a directory cannot move into itself"),
                (_, Found::Dir { .. }) if !is_dir => skip("a directory has the target name here"),
                (_, Found::File(..) | Found::Symlink(..) | Found::Special) if is_dir => skip("a file has the target name here"),
                (_, Found::Dir { empty: false }) => skip("the target directory here is not empty"),
                _ if to_depth < 2 && !is_dir => skip("files live in namespaces, not at the root"),
                _ => t.rename(from, to).map(|()| Outcome::Applied),
            }
        }
    }
}
