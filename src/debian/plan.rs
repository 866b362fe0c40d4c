//! From requests to verified `.deb` files: reuse the lock when it still
//! fits (no index needed, so a warm cache means no network), else resolve
//! against the signed archive and make a new lock; then every `.deb` from
//! the cache or the mirror, checked against the lock's sha256.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use super::base::BaseFacts;
use super::error::DebianError;
use super::fetch::{Cache, Expected, Fetch, FetchError, Sha256};
use super::index::{Archive, Sources, join};
use super::lock::{Lock, LockInputs, LockedPackage, pocket_kind};
use super::resolve::{Dropped, InBase, Request, ResolveOptions, resolve};

/// Downloads in flight at once.
const PARALLEL_DOWNLOADS: usize = 4;

/// What to do with the lock file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LockMode {
    /// Use it when it fits the inputs; otherwise resolve and make a new one.
    #[default]
    Reuse,
    /// Resolve again (`--update-packages`).
    Update,
    /// Use it, and fail if it is missing or would change (`--locked`).
    Locked,
}

/// Everything [`prepare`] needs. Plain data; the build command fills it.
#[derive(Clone, Copy, Debug)]
pub struct PrepareOptions<'a> {
    /// Mirrors, suite, architecture, keyring.
    pub sources: &'a Sources,
    /// What was asked for (`--package`, `[build] packages`, or a `deb:`
    /// base's set).
    pub requests: &'a [Request],
    /// Packages never added (a `deb:` base's [`super::runner::RUNNER_EXCLUDE`]).
    pub exclude: &'a [String],
    /// What the base has.
    pub base: &'a BaseFacts,
    /// What identifies the base in the lock (its digest, or `deb:SUITE`).
    pub base_id: &'a str,
    /// The lock read from disk, if any.
    pub lock: Option<&'a Lock>,
    /// Where the lock lives (for messages).
    pub lock_path: &'a Path,
    /// What to do with it.
    pub mode: LockMode,
    /// Where indexes and `.deb`s are cached.
    pub cache: &'a Cache,
    /// The time to check `Valid-Until` and signatures against.
    pub now: SystemTime,
}

/// A verified `.deb` in the cache.
#[derive(Clone, Debug)]
pub struct DebFile {
    /// Its lock entry.
    pub package: LockedPackage,
    /// The file.
    pub path: PathBuf,
    /// Its sha256.
    pub sha256: Sha256,
}

/// What [`prepare`] found.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The lock the packages follow (new or reused).
    pub lock: Lock,
    /// Whether it differs from the one given: the caller writes it.
    pub lock_changed: bool,
    /// Whether the archive was consulted (false: the lock was reused).
    pub resolved: bool,
    /// The `.deb`s, sorted by name.
    pub debs: Vec<DebFile>,
    /// Requests and relations the base satisfies (when resolved).
    pub in_base: Vec<InBase>,
    /// Relations left out because of `exclude` (when resolved).
    pub dropped: Vec<Dropped>,
}

/// Resolve (or reuse the lock), then fetch and verify every `.deb`.
pub fn prepare(fetch: &dyn Fetch, o: &PrepareOptions<'_>) -> Result<Prepared, DebianError> {
    let inputs = LockInputs::new(
        &o.sources.suite,
        &o.sources.architecture,
        o.base_id,
        o.requests.iter().map(Request::to_string),
        o.exclude.iter().cloned(),
    );
    let fits = o.lock.filter(|l| l.mismatch(&inputs).is_none());
    if o.mode == LockMode::Locked {
        let Some(lock) = o.lock else {
            return Err(DebianError::LockOutdated {
                path: o.lock_path.to_owned(),
                reason: "there is no lock file".into(),
            });
        };
        if let Some(reason) = lock.mismatch(&inputs) {
            return Err(DebianError::LockOutdated {
                path: o.lock_path.to_owned(),
                reason,
            });
        }
    }
    let (lock, resolved, in_base, dropped) = match fits {
        Some(lock) if o.mode != LockMode::Update => (lock.clone(), false, Vec::new(), Vec::new()),
        _ => {
            let archive = Archive::open(fetch, o.cache, o.sources, o.now)?;
            let res = resolve(
                &archive,
                ResolveOptions {
                    requests: o.requests,
                    base: o.base,
                    exclude: o.exclude,
                },
            )?;
            let lock = Lock::from_resolution(inputs, &archive, &res);
            (lock, true, res.in_base, res.dropped)
        }
    };
    let lock_changed = o.lock != Some(&lock);
    if lock_changed && o.mode == LockMode::Locked {
        return Err(DebianError::LockOutdated {
            path: o.lock_path.to_owned(),
            reason: "the packages would change".into(),
        });
    }
    let debs = download(fetch, o.cache, o.sources, &lock)?;
    Ok(Prepared {
        lock,
        lock_changed,
        resolved,
        debs,
        in_base,
        dropped,
    })
}

/// Every package of the lock, from the cache or the mirror, verified.
pub fn download(
    fetch: &dyn Fetch,
    cache: &Cache,
    sources: &Sources,
    lock: &Lock,
) -> Result<Vec<DebFile>, DebianError> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<DebFile, DebianError>)>> = Mutex::new(Vec::new());
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(p) = lock.packages.get(i) else {
                return;
            };
            let r = fetch_one(fetch, cache, sources, lock, p);
            let failed = r.is_err();
            results
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((i, r));
            if failed {
                // Stop handing out work; the error is reported below.
                next.store(lock.packages.len(), Ordering::Relaxed);
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_DOWNLOADS.min(lock.packages.len()) {
            s.spawn(work);
        }
    });
    let mut all = results.into_inner().unwrap_or_else(|e| e.into_inner());
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

fn fetch_one(
    fetch: &dyn Fetch,
    cache: &Cache,
    sources: &Sources,
    lock: &Lock,
    p: &LockedPackage,
) -> Result<DebFile, DebianError> {
    let sha256 = Sha256::from_hex(&p.sha256).ok_or_else(|| DebianError::Lock {
        path: PathBuf::from(super::lock::LOCK_FILE),
        reason: format!("package {}: not a sha256", p.name),
    })?;
    let kind = lock
        .pockets
        .iter()
        .find(|k| k.name == p.pocket)
        .and_then(|k| pocket_kind(&k.kind))
        .unwrap_or(super::index::PocketKind::Release);
    let url = join(sources.mirror_of(kind), &p.filename)?;
    let what = format!("{} {}", p.name, p.version);
    let want = Expected {
        sha256,
        size: p.size,
        what: &what,
        source_of_truth: "the lock file (from the signed Packages index)",
    };
    match cache.fetch(fetch, std::slice::from_ref(&url), &want) {
        Ok(path) => Ok(DebFile {
            package: p.clone(),
            path,
            sha256,
        }),
        Err(DebianError::Fetch(FetchError::NotFound { url, .. })) => Err(DebianError::Gone {
            package: p.name.clone(),
            version: p.version.clone(),
            url,
            snapshot: lock.snapshot_url(&p.pocket),
            snapshot_package: format!("https://snapshot.debian.org/binary/{}/", p.name),
        }),
        Err(e) => Err(e),
    }
}
