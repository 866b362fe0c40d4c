//! Debian packages in a direct build: the packages layer between an image
//! base and the release (`--package`), or a whole base made of packages
//! (`deb:SUITE`, `deb:auto`). Finds the suite (the base's `os-release`)
//! and the architecture (the release's ERTS), reads and writes the lock
//! file, and reuses the layer when what it is made of has not changed.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::SystemTime;

use url::Url;

use super::base::BaseImage;
use crate::cache::Memo;
use crate::debian::{
    self, BaseFacts, Cache, DebianError, Fetch, FetchError, LayerRequest, Lock, PrepareOptions,
    Request, Sources,
};
use crate::error::Context as _;
use crate::error::{Error, Result};
use crate::image::{Descriptor, Digest, Platform, media};
use crate::layer::LayerOptions;
use crate::layout::Layout;
use crate::preflight::{self, ReleaseNeeds};
use crate::progress::Progress;
use crate::registry::archive_http::{ArchiveHttp, ArchiveHttpOptions};
use crate::release::Release;
use crate::settings::BaseSpec;
use crate::settings::DebianSettings;

/// The packages layer of a build.
#[derive(Clone, Debug)]
pub(super) struct PackagesLayer {
    /// The gzip blob in the layout.
    pub(super) descriptor: Descriptor,
    /// sha256 of its tar.
    pub(super) diff_id: Digest,
    /// The history line (`guildhall-image: Debian packages libssl3 …`).
    pub(super) created_by: String,
    /// The suite the packages are from.
    pub(super) suite: String,
    /// How many packages it holds.
    pub(super) count: usize,
    /// Whether the layout held it already.
    pub(super) reused: bool,
}

/// What one packages layer is made of.
pub(super) struct LayerJob<'a> {
    /// What the packages go onto ([`BaseFacts::empty`] for a `deb:` base).
    pub(super) base: &'a BaseFacts,
    /// What identifies that base in the lock (a digest, or `deb:SUITE`).
    pub(super) base_id: &'a str,
    /// The suite.
    pub(super) suite: &'a str,
    /// Debian's architecture name.
    pub(super) architecture: &'a str,
    /// What was asked for.
    pub(super) requests: &'a [Request],
    /// Never added, even as a dependency.
    pub(super) exclude: &'a [String],
    /// A base of these packages alone.
    pub(super) standalone: bool,
}

/// Debian's archive as a direct build uses it.
pub(super) struct Packages<'a> {
    settings: &'a DebianSettings,
    cache: Cache,
    /// Made on first use: most builds add no packages.
    fetch: std::cell::OnceCell<Box<dyn Fetch>>,
    offline: bool,
    layout: &'a Layout,
    memo: &'a Memo,
    progress: &'a Progress,
    now: SystemTime,
}

/// With `--offline`: nothing that is not in the cache.
struct Offline;

impl Fetch for Offline {
    fn get(&self, url: &Url, _dest: &Path, _limit: u64) -> Result<u64, FetchError> {
        Err(FetchError::Network {
            url: debian::fetch::display_url(url),
            reason: "--offline, and it is not in the cache (build once online; with \
                     guildhall-image.lock and a warm cache no download is needed)"
                .into(),
        })
    }
}

/// Debian's name of a platform's architecture.
pub(super) fn debian_architecture(p: &Platform) -> Result<&'static str> {
    match (p.architecture.as_str(), p.variant.as_deref()) {
        ("amd64", _) => Ok("amd64"),
        ("arm64", _) => Ok("arm64"),
        _ => Err(Error::usage(format!(
            "Debian packages for {p}: only linux/amd64 and linux/arm64 releases are supported"
        ))),
    }
}

impl<'a> Packages<'a> {
    /// Debian's archive as a build uses it, with the cache under
    /// `cache_dir/debian`; with `offline`, only what the cache holds.
    pub(super) fn new(
        settings: &'a DebianSettings,
        offline: bool,
        cache_dir: &Path,
        layout: &'a Layout,
        memo: &'a Memo,
        progress: &'a Progress,
    ) -> Packages<'a> {
        Packages {
            settings,
            cache: Cache::new(cache_dir.join("debian")),
            fetch: std::cell::OnceCell::new(),
            offline,
            layout,
            memo,
            progress,
            now: SystemTime::now(),
        }
    }

    /// The archive client, made the first time it is needed (none with
    /// `--offline`).
    fn fetch(&self) -> Result<&dyn Fetch> {
        if self.fetch.get().is_none() {
            let fetch: Box<dyn Fetch> = if self.offline {
                Box::new(Offline)
            } else {
                let handle = tokio::runtime::Handle::try_current().map_err(|_| {
                    Error::input("the Debian archive client needs the tool's runtime")
                })?;
                Box::new(
                    ArchiveHttp::new(handle, ArchiveHttpOptions::default())
                        .map_err(|e| Error::input(format!("the Debian archive client: {e}")))?,
                )
            };
            let _ = self.fetch.set(fetch);
        }
        Ok(self.fetch.get().expect("set above").as_ref())
    }

    /// The sources of `suite` for `architecture`: the configured mirrors,
    /// every pocket, the built-in keys or `--debian-keyring`.
    pub(super) fn sources(&self, suite: &str, architecture: &str) -> Result<Sources> {
        let mut s = Sources::debian(suite, architecture);
        s.mirror = self.settings.mirror.clone();
        s.security_mirror = self.settings.security_mirror.clone();
        if let Some(k) = &self.settings.keyring {
            s.keyring = debian::Keyring::from_file(k)?;
        }
        Ok(s)
    }

    /// The suite of an image base, from its `os-release`; one the tool has
    /// the archive keys of.
    pub(super) fn suite_of(&self, facts: &BaseFacts, base_name: &str) -> Result<String> {
        let suites = debian::runner::SUITES;
        match facts.debian_suite() {
            Some(s) if suites.contains(&s.as_str()) || self.settings.keyring.is_some() => Ok(s),
            Some(s) => Err(Error::usage(format!(
                "--package: the base {base_name} is Debian `{s}`, and packages come from {} \
                 only (or give --debian-keyring and --debian-mirror for another archive)",
                suites.join(", ")
            ))),
            None => Err(Error::usage(format!(
                "--package: the base {base_name} is not Debian-based (its /etc/os-release \
                 names no Debian codename); use a Debian base, or --base deb:SUITE"
            ))),
        }
    }

    /// `deb:auto`: the oldest suite whose glibc and OpenSSL define every
    /// symbol version the release needs.
    pub(super) fn choose_suite(&self, architecture: &str, needs: &ReleaseNeeds) -> Result<String> {
        let key = Digest::of(
            format!(
                "deb:auto v1 {} {} {architecture} {:?}",
                self.settings.mirror, self.settings.security_mirror, needs.versions
            )
            .as_bytes(),
        );
        // The archive only ever gains symbol versions: a choice made once
        // stays right (`--update-packages` asks again).
        if self.settings.lock_mode != debian::LockMode::Update {
            if let Some(suite) = self.memo.get("deb-auto", &key) {
                tracing::info!("deb:auto: {suite}, as chosen before for these symbol versions");
                return Ok(suite);
            }
        }
        let template = self.sources("unused", architecture)?;
        let versions: Vec<String> = needs.versions.iter().cloned().collect();
        let choice = debian::choose_suite(
            self.fetch()?,
            &self.cache,
            &template,
            debian::runner::SUITES,
            &versions,
            self.now,
        )?;
        for r in &choice.reasons {
            tracing::info!("deb:auto: {r}");
        }
        self.progress.say(format!("deb:auto: {}", choice.suite));
        self.memo.put("deb-auto", &key, &choice.suite);
        Ok(choice.suite)
    }

    /// The packages that ship `libraries` where the dynamic linker looks,
    /// by Debian's `Contents` index of `suite`; `Err` names what is in no
    /// package.
    pub(super) fn library_packages(
        &self,
        suite: &str,
        architecture: &str,
        libraries: &BTreeSet<String>,
    ) -> Result<Result<BTreeSet<String>, Vec<String>>> {
        let key = Digest::of(
            format!(
                "contents v1 {} {suite} {architecture} {libraries:?}",
                self.settings.mirror
            )
            .as_bytes(),
        );
        // Which package ships a library does not change within a suite:
        // remembered, so a warm rebuild asks the archive nothing.
        if self.settings.lock_mode != debian::LockMode::Update {
            if let Some(v) = self.memo.get("contents", &key) {
                let packages: BTreeSet<String> = v.split_whitespace().map(str::to_owned).collect();
                if !packages.is_empty() {
                    tracing::info!("libraries {libraries:?} are in {v} ({suite}, remembered)");
                    return Ok(Ok(packages));
                }
            }
        }
        let sources = self.sources(suite, architecture)?;
        let queries: Vec<&str> = libraries.iter().map(String::as_str).collect();
        let t = self.progress.task(format!("Contents of {suite}"), None);
        let found = debian::find_files(self.fetch()?, &self.cache, &sources, self.now, &queries)?;
        t.finish("done");
        let mut packages = BTreeSet::new();
        let mut unknown = Vec::new();
        for lib in libraries {
            match found
                .get(lib)
                .and_then(|m| debian::library_package(m, architecture))
            {
                Some(p) => {
                    tracing::info!("{lib} is in Debian package {p} ({suite})");
                    packages.insert(p.to_owned());
                }
                None => unknown.push(lib.clone()),
            }
        }
        Ok(if unknown.is_empty() {
            let names: Vec<&str> = packages.iter().map(String::as_str).collect();
            self.memo.put("contents", &key, &names.join(" "));
            Ok(packages)
        } else {
            Err(unknown)
        })
    }

    /// Resolve (or follow the lock), fetch, verify, and write the layer
    /// into the layout — or find it there already.
    pub(super) fn layer(&self, job: &LayerJob<'_>) -> Result<PackagesLayer> {
        let s = self.settings;
        let sources = self.sources(job.suite, job.architecture)?;
        let lock = Lock::read(&s.lock_path)?;
        let t = self.progress.task("Debian packages", None);
        let prepared = debian::prepare(
            self.fetch()?,
            &PrepareOptions {
                sources: &sources,
                requests: job.requests,
                exclude: job.exclude,
                base: job.base,
                base_id: job.base_id,
                lock: lock.as_ref(),
                lock_path: &s.lock_path,
                mode: s.lock_mode,
                cache: &self.cache,
                now: self.now,
            },
        )?;
        for k in &prepared.lock.packages {
            tracing::info!("package {} {} ({}): {}", k.name, k.version, k.pocket, k.why);
        }
        for b in &prepared.in_base {
            tracing::debug!("in the base already: {b:?}");
        }
        for d in &prepared.dropped {
            tracing::info!("left out: {d:?}");
        }
        if prepared.lock_changed {
            prepared.lock.write(&s.lock_path)?;
            self.progress.say(format!(
                "wrote {} ({} packages)",
                s.lock_path.display(),
                prepared.lock.packages.len()
            ));
        }
        let options = LayerOptions::default();
        let req = LayerRequest {
            debs: &prepared.debs,
            base: job.base,
            standalone: job.standalone,
            slim: true,
            architecture: job.architecture,
            cache: &self.cache,
            options: &options,
            progress: Some(&t),
        };
        let key = debian::layer_fingerprint(&req);
        if let Some(hit) = self
            .memo
            .get("debian-layer", &key)
            .and_then(|v| parse_memo(&v))
        {
            if self.layout.has_blob(&hit.descriptor.digest) {
                t.finish("reused");
                return Ok(PackagesLayer {
                    suite: job.suite.to_owned(),
                    count: prepared.debs.len(),
                    reused: true,
                    ..hit
                });
            }
        }
        let w = self.layout.blob_writer()?;
        let (stats, w, report) = debian::write_layer(&req, w)?;
        let (digest, size) = w.commit(None)?;
        for d in &report.scripts.done {
            tracing::info!("done in a maintainer script's stead: {d}");
        }
        for n in &report.scripts.not_run {
            tracing::info!("maintainer scripts not run: {n}");
        }
        for c in &report.clashes {
            tracing::info!("written by two packages: {c}");
        }
        let created_by = debian::history_line(&report);
        let layer = PackagesLayer {
            descriptor: Descriptor::new(media::OCI_LAYER_GZIP, digest, size),
            diff_id: stats.diff_id,
            created_by,
            suite: job.suite.to_owned(),
            count: prepared.debs.len(),
            reused: false,
        };
        self.memo.put(
            "debian-layer",
            &key,
            &format!(
                "{} {} {}\n{}",
                layer.descriptor.digest, layer.descriptor.size, layer.diff_id, layer.created_by
            ),
        );
        t.finish(&format!(
            "{} packages, {:.1} MB",
            prepared.debs.len(),
            size as f64 / 1e6
        ));
        Ok(layer)
    }
}

fn parse_memo(v: &str) -> Option<PackagesLayer> {
    let (head, created_by) = v.split_once('\n')?;
    let mut it = head.split(' ');
    let digest: Digest = it.next()?.parse().ok()?;
    let size: u64 = it.next()?.parse().ok()?;
    let diff_id: Digest = it.next()?.parse().ok()?;
    Some(PackagesLayer {
        descriptor: Descriptor::new(media::OCI_LAYER_GZIP, digest, size),
        diff_id,
        created_by: created_by.to_owned(),
        suite: String::new(),
        count: 0,
        reused: true,
    })
}

impl From<FetchError> for Error {
    fn from(e: FetchError) -> Error {
        DebianError::from(e).into()
    }
}

/// The dpkg database, symlinks and `os-release` of an image base, from its
/// layers where they came from, remembered per base manifest (reading them means
/// decompressing every base layer).
pub(super) fn image_facts(base: &BaseImage, memo: &Memo) -> Result<BaseFacts> {
    let key = Digest::of(format!("debian base facts v1 {}", base.manifest_digest).as_bytes());
    if let Some(f) = memo
        .get("debian-base", &key)
        .and_then(|t| BaseFacts::from_record(&t).ok())
    {
        return Ok(f);
    }
    let facts = read_image_facts(base)?;
    if let Some(t) = facts.to_record() {
        memo.put("debian-base", &key, &t);
    }
    Ok(facts)
}

fn read_image_facts(base: &BaseImage) -> Result<BaseFacts> {
    Ok(BaseFacts::from_layers(
        base.layout.layer_readers(base.layers())?,
    )?)
}

/// `--package` onto an image base: its suite from its `os-release`, the
/// architecture from ERTS.
pub(super) fn packages_onto(
    packages: &Packages<'_>,
    base: &BaseImage,
    release: &Release,
) -> Result<PackagesLayer> {
    let arch = debian_architecture(release.platform())?;
    let facts = image_facts(base, packages.memo)
        .with_context(|| format!("reading the packages of the base {}", base.name))?;
    let suite = packages.suite_of(&facts, &base.name)?;
    let requests = &packages.settings.packages;
    packages.layer(&LayerJob {
        base: &facts,
        base_id: &base.manifest_digest.to_string(),
        suite: &suite,
        architecture: arch,
        requests,
        exclude: &[],
        standalone: false,
    })
}

/// A `deb:SUITE` (or `deb:auto`) base: the runner set, the packages of the
/// libraries the release needs (by `Contents`), and any `--package`.
pub(super) fn packages_base(
    packages: &Packages<'_>,
    spec: &BaseSpec,
    release: &Release,
) -> Result<PackagesLayer> {
    let arch = debian_architecture(release.platform())?;
    let needs = preflight::needs(release);
    let suite = match spec {
        BaseSpec::Debian(s) => s.clone(),
        _ => packages.choose_suite(arch, &needs)?,
    };
    let libraries = match packages.library_packages(&suite, arch, &needs.libraries)? {
        Ok(p) => p,
        Err(unknown) => {
            return Err(crate::error::Error::input(format!(
                "deb:{suite}: no package of Debian {suite} ships {}, which the release needs \
                 (is it built for Debian?)",
                unknown.join(", ")
            )));
        }
    };
    let (mut requests, exclude) =
        debian::runner_requests(&libraries.into_iter().collect::<Vec<_>>());
    for r in &packages.settings.packages {
        requests.retain(|q: &Request| q.name != r.name);
        requests.push(r.clone());
    }
    packages.layer(&LayerJob {
        base: &BaseFacts::empty(),
        base_id: &format!("deb:{suite}"),
        suite: &suite,
        architecture: arch,
        requests: &requests,
        exclude: &exclude,
        standalone: true,
    })
}
