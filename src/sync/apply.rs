//! The rules for applying another node's change — one set, for every namespace that follows
//! a bucket: a mounted node's tree (`fs::peers`) and the library's name table
//! ([`super::names::NameTable`]). They make applying idempotent and keep a stale change from
//! destroying newer data:
//!
//! - `File` / `Symlink`: the name is (re)bound to the published content; a name that already
//!   holds the same content only takes the attributes; a directory of that name stays.
//!   Missing parent directories are created. Files live in namespaces, never at the root.
//! - `Dir`: created (with missing parents) or its attributes updated; a file of that name stays.
//! - `Remove`: a file only if it still holds the blob the remover saw; a directory only if empty.
//! - `Rename`: done if the source exists here and the target may be replaced as `rename(2)`
//!   allows (not a directory into itself, a file over a directory, a directory over a file or a
//!   non-empty directory). Renamed files are followed by their `File` state, so a node that
//!   never saw the old name still gets the new one.

use crate::blob::BlobId;
use crate::sync::change::{self, Attrs, Change};

/// What a path names, as far as the rules need to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// nothing (or its parent directories are missing)
    Nothing,
    /// a regular file with this content
    File(BlobId),
    /// a symbolic link to this target
    Symlink(Vec<u8>),
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
    /// Bind `path` (not a directory now) to a file or symlink change's content.
    fn bind(&mut self, change: &Change) -> Result<(), Self::Error>;
    /// `path` holds the change's content already: take its attributes.
    fn set_attrs(&mut self, path: &[u8], attrs: &Attrs) -> Result<(), Self::Error>;
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

/// Apply one change to `t` by the rules above.
pub fn apply<T: Target>(t: &mut T, c: &Change) -> Result<Outcome, T::Error> {
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
            match (t.find(path)?, c) {
                (Found::Dir { .. }, _) => skip("a directory has this name here"),
                (Found::File(mine), Change::File { blob, .. }) if mine == *blob => t.set_attrs(path, attrs).map(|()| Outcome::Applied),
                (Found::Symlink(mine), Change::Symlink { target, .. }) if mine == *target => t.set_attrs(path, attrs).map(|()| Outcome::Applied),
                _ => t.bind(c).map(|()| Outcome::Applied),
            }
        }
        Change::Dir { path, attrs } => match t.find(path)? {
            Found::File(_) | Found::Symlink(_) | Found::Special => skip("a file has this name here"),
            _ => t.make_dir(path, attrs).map(|()| Outcome::Applied),
        },
        Change::Remove { path, blob } => match t.find(path)? {
            Found::Nothing => Ok(Outcome::Applied),
            Found::File(mine) if blob.is_some_and(|b| b != mine) => skip("the file here has newer content"),
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
                (_, Found::File(_) | Found::Symlink(_) | Found::Special) if is_dir => skip("a file has the target name here"),
                (_, Found::Dir { empty: false }) => skip("the target directory here is not empty"),
                _ if to_depth < 2 && !is_dir => skip("files live in namespaces, not at the root"),
                _ => t.rename(from, to).map(|()| Outcome::Applied),
            }
        }
    }
}
