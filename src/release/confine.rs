//! Reading a release tree without ever leaving it: names taken from release
//! metadata (`.rel`, `start_erl.data`) checked to be plain path components,
//! directories and files reached without following a symlink, small files
//! read with a size bound, and excerpts of bad content made safe to print.
//!
//! A release is input the tool does not trust: it runs as root in CI, next
//! to registry credentials, and whatever it reads ends up in a published
//! image or in an error message.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use super::ReleaseError;
use crate::tree::{Tree, TreeFile};

/// Release metadata files are small; a bigger one is not what it claims.
pub(crate) const MAX_METADATA_FILE: u64 = 1 << 20;

/// At most this many characters of a bad value are quoted in an error.
const EXCERPT_CHARS: usize = 40;

/// `value` (a release, application or ERTS name or version, read from
/// `file`) as one plain path component: not empty, not `.` or `..`, no `/`,
/// `\`, NUL, white space or control characters. Anything else could name a
/// directory outside the release (`1/../../../../etc`).
pub(crate) fn plain_component(file: &Path, what: &str, value: &str) -> Result<(), ReleaseError> {
    let bad = value.is_empty()
        || value == "."
        || value == ".."
        || value.len() > 255
        || value
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(ReleaseError::Malformed {
            path: file.to_owned(),
            reason: format!(
                "{what} {} is not a plain name (it must not contain `/`, `..`, spaces or control characters)",
                excerpt(value)
            ),
        });
    }
    Ok(())
}

/// A short, printable quotation of untrusted text: at most a few dozen
/// characters, control characters escaped, in backticks.
pub(crate) fn excerpt(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(EXCERPT_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    format!("`{out}`")
}

/// `root/rel`, checked to be reached through real directories only (no
/// component, the last included, is a symlink) and to be of the wanted
/// kind. `Ok(None)` when it does not exist.
pub(crate) fn lookup(
    tree: &Tree,
    root: &Path,
    rel: &Path,
    want: Want,
) -> Result<Option<PathBuf>, ReleaseError> {
    let mut cur = root.to_path_buf();
    let comps: Vec<Component> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        let Component::Normal(name) = c else {
            return Err(ReleaseError::Malformed {
                path: root.join(rel),
                reason: "the path leaves the release".into(),
            });
        };
        cur.push(name);
        let meta = match tree.symlink_metadata(&cur) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ReleaseError::Io(crate::error::IoError {
                    action: "reading",
                    path: cur,
                    source,
                }));
            }
        };
        let last = i + 1 == comps.len();
        if meta.is_symlink() {
            return Err(ReleaseError::Malformed {
                path: cur,
                reason: "it is a symlink; the release's own directories and metadata files must be real (a symlink could lead outside the release)".into(),
            });
        }
        let ok = if last {
            match want {
                Want::Dir => meta.is_dir(),
                Want::File => meta.is_file(),
            }
        } else {
            meta.is_dir()
        };
        if !ok {
            return Ok(None);
        }
    }
    Ok(Some(cur))
}

/// What [`lookup`] looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// A directory.
    Dir,
    /// A regular file.
    File,
}

/// Read a small release file as UTF-8 text, never following a symlink and
/// never reading more than [`MAX_METADATA_FILE`] bytes.
pub(crate) fn read_text(tree: &Tree, path: &Path) -> Result<String, ReleaseError> {
    let bytes = read_small(tree, path, MAX_METADATA_FILE)?;
    String::from_utf8(bytes).map_err(|_| ReleaseError::Malformed {
        path: path.to_owned(),
        reason: "not UTF-8 text".into(),
    })
}

/// Up to `limit` bytes of a regular file opened with `O_NOFOLLOW`.
pub(crate) fn read_small(tree: &Tree, path: &Path, limit: u64) -> Result<Vec<u8>, ReleaseError> {
    let f = open_nofollow(tree, path)?;
    let len = f.meta().len;
    if len > limit {
        return Err(ReleaseError::Malformed {
            path: path.to_owned(),
            reason: format!(
                "{len} bytes, more than the {limit} a release file of this kind may have"
            ),
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    f.take(limit).read_to_end(&mut bytes).map_err(|source| {
        ReleaseError::Io(crate::error::IoError {
            action: "reading",
            path: path.to_owned(),
            source,
        })
    })?;
    Ok(bytes)
}

/// Open a regular file without following a symlink at its last component.
pub(crate) fn open_nofollow(tree: &Tree, path: &Path) -> Result<TreeFile, ReleaseError> {
    let f = tree.open(path).map_err(|source| {
        if source.raw_os_error() == Some(libc::ELOOP) {
            ReleaseError::Malformed {
                path: path.to_owned(),
                reason: "it is a symlink; a release's metadata files must be real files".into(),
            }
        } else {
            ReleaseError::Io(crate::error::IoError {
                action: "opening",
                path: path.to_owned(),
                source,
            })
        }
    })?;
    if !f.meta().is_file() {
        return Err(ReleaseError::Malformed {
            path: path.to_owned(),
            reason: "not a regular file".into(),
        });
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_a_directory_are_not_plain() {
        let f = Path::new("x.rel");
        for ok in [
            "8.5.3",
            "1.0.0-rc.1+build",
            "kernel",
            "guildhall_web",
            "café",
        ] {
            assert!(plain_component(f, "version", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "1/../../etc", "a\\b", "a b", "a\nb", "x\0"] {
            assert!(plain_component(f, "version", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn excerpts_are_short_and_escaped() {
        let e = excerpt(&format!("root:$6$salt\n{}", "x".repeat(100)));
        assert!(
            e.len() < 60 && e.contains("\\n") && e.ends_with("…`"),
            "{e}"
        );
    }
}
