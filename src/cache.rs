//! A small on-disk memo in the cache directory: answers worth remembering
//! between builds on this machine (the diff ID of a layer whose files have
//! not changed; a release that passed preflight on a base), keyed by
//! fingerprints. Losing it only costs time; a write that fails is ignored.

use std::path::{Path, PathBuf};

use crate::image::Digest;

/// The memo under `<cache>/memo/`.
pub struct Memo {
    dir: PathBuf,
}

impl Memo {
    /// The memo in `cache_dir`.
    pub fn new(cache_dir: &Path) -> Memo {
        Memo {
            dir: cache_dir.join("memo"),
        }
    }

    fn path(&self, kind: &str, key: &Digest) -> PathBuf {
        self.dir.join(kind).join(key.hex())
    }

    /// What was remembered under `kind`/`key`.
    pub fn get(&self, kind: &str, key: &Digest) -> Option<String> {
        std::fs::read_to_string(self.path(kind, key))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// Remember `value` (written to a temp file and renamed).
    pub fn put(&self, kind: &str, key: &Digest, value: &str) {
        let path = self.path(kind, key);
        let write = || -> std::io::Result<()> {
            let dir = path.parent().expect("a memo path has a parent");
            std::fs::create_dir_all(dir)?;
            let tmp = dir.join(format!(".{}.{}", key.hex(), std::process::id()));
            std::fs::write(&tmp, value)?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            tracing::debug!(path = %path.display(), error = %e, "memo not written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_put_is_got_back_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let m = Memo::new(dir.path());
        let k = Digest::of(b"k");
        assert_eq!(m.get("diffid", &k), None);
        m.put("diffid", &k, "sha256:abc 12");
        assert_eq!(m.get("diffid", &k).as_deref(), Some("sha256:abc 12"));
        assert_eq!(m.get("preflight", &k), None);
    }
}
