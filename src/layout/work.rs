//! Locks and scratch: the `flock`s that serialise `index.json` updates and
//! keep `gc` out while a build writes, and each command's own scratch
//! directory, swept when its owner is gone.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::{LOCK_FILE, Layout, Result, TMP_COUNTER, TMP_DIR, WRITERS_LOCK, io_err};

impl Layout {
    pub(super) fn lock(&self) -> Result<LockGuard> {
        self.flock(LOCK_FILE, libc::LOCK_EX)
    }

    pub(super) fn flock(&self, name: &str, how: libc::c_int) -> Result<LockGuard> {
        let p = self.root.join(name);
        flock_path(&p, how)?
            .ok_or_else(|| io_err("locking", &p)(io::Error::from(io::ErrorKind::WouldBlock)).into())
    }

    /// Start writing to the layout: a shared hold that keeps `gc` out until
    /// it is dropped, and a scratch directory of this command's own under
    /// `.guildhall-tmp/` (removed on drop). Scratch left behind by commands
    /// that died (`kill -9`, a crash) is removed first: each scratch
    /// directory is flock-ed by its owner, so a lock that can be taken
    /// belongs to no live process.
    pub fn work(&self) -> Result<Work> {
        let writers = self.flock(WRITERS_LOCK, libc::LOCK_SH)?;
        let tmp = self.root.join(TMP_DIR);
        fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
        self.sweep_dead_scratch(&tmp);
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = tmp.join(format!("work-{}-{n}", std::process::id()));
        fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
        let lock = match flock_path(&dir.join(".lock"), libc::LOCK_EX | libc::LOCK_NB)? {
            Some(l) => l,
            None => {
                return Err(
                    io_err("locking", &dir)(io::Error::from(io::ErrorKind::WouldBlock)).into(),
                );
            }
        };
        Ok(Work {
            dir,
            _lock: lock,
            _writers: writers,
        })
    }

    /// Whether another command is writing to the layout right now (so `gc`
    /// would wait for it).
    pub fn is_being_written(&self) -> bool {
        matches!(
            flock_path(&self.root.join(WRITERS_LOCK), libc::LOCK_EX | libc::LOCK_NB),
            Ok(None)
        )
    }

    /// Remove the scratch directories and blob temp files of dead commands.
    fn sweep_dead_scratch(&self, tmp: &Path) {
        let Ok(entries) = fs::read_dir(tmp) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let dead = if name.starts_with("work-") {
                // Taking the owner's lock proves the owner is gone.
                matches!(
                    flock_path(&path.join(".lock"), libc::LOCK_EX | libc::LOCK_NB),
                    Ok(Some(_))
                ) || !path.join(".lock").exists()
            } else if let Some(pid) = name
                .strip_prefix("blob-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            {
                pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
            } else {
                // Scratch of older versions (release-*, buildkit-*), by age.
                e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > std::time::Duration::from_secs(24 * 3600))
            };
            if dead {
                tracing::debug!(path = %path.display(), "removing scratch of a command that is gone");
                remove_tree(&path);
            }
        }
    }
}

pub(super) struct LockGuard {
    _file: File,
}

/// A command writing to a layout (see [`Layout::work`]).
pub struct Work {
    dir: PathBuf,
    _lock: LockGuard,
    _writers: LockGuard,
}

impl Work {
    /// This command's scratch directory (inside the layout, so files can be
    /// renamed into `blobs/` and extracted trees stay on the same disk).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        remove_tree(&self.dir);
    }
}

/// `flock` a file (created if need be); `Ok(None)` when `LOCK_NB` was asked
/// and someone else holds it.
fn flock_path(p: &Path, how: libc::c_int) -> Result<Option<LockGuard>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
        .map_err(io_err("opening", p))?;
    // SAFETY: flock on a valid open descriptor; released when `f` closes.
    let rc = unsafe { libc::flock(f.as_raw_fd(), how) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(io_err("locking", p)(e).into());
    }
    Ok(Some(LockGuard { _file: f }))
}

/// Remove a directory tree, making read-only directories writable first
/// (an extracted release may have some); failures are only logged.
pub(super) fn remove_tree(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    fn unlock(p: &Path) {
        if let Ok(m) = fs::symlink_metadata(p) {
            if m.is_dir() {
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
                if let Ok(it) = fs::read_dir(p) {
                    for e in it.flatten() {
                        unlock(&e.path());
                    }
                }
            }
        }
    }
    unlock(path);
    if let Err(e) = fs::remove_dir_all(path) {
        tracing::warn!("could not remove scratch {}: {e}", path.display());
    }
}
