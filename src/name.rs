//! Names of files, directories and namespaces: the one check of what the kernel, another
//! node's change journal, the config file or a corrupted index may hand us.

use thiserror::Error;

/// Longest accepted name.
pub const NAME_MAX: usize = 255;

/// Why a name is refused.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum NameError {
    /// longer than [`NAME_MAX`] bytes
    #[error("name longer than {NAME_MAX} bytes")]
    TooLong,
    /// empty, `.`, `..`, or with `/` or NUL
    #[error("bad name")]
    Invalid,
}

/// Reject names that are empty, `.`, `..`, contain `/` or NUL, or are longer than 255 bytes.
pub fn check(name: &[u8]) -> Result<(), NameError> {
    if name.len() > NAME_MAX {
        return Err(NameError::TooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(NameError::Invalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_a_directory_entry_cannot_be() {
        assert_eq!(check(b"block-0.bin"), Ok(()));
        assert_eq!(check(&[b'x'; 255]), Ok(()));
        assert_eq!(check(&[b'x'; 256]), Err(NameError::TooLong));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert_eq!(check(bad), Err(NameError::Invalid), "{bad:?}");
        }
    }
}
