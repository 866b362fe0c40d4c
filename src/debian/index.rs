//! A suite's package universe: for each pocket (`SUITE`, `SUITE-updates`
//! from the mirror, `SUITE-security` from the security mirror) the signed
//! `InRelease`, then its `Packages` index verified against the signed
//! sha256, parsed into compact [`Candidate`]s.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::time::SystemTime;

use url::Url;

use super::deb::Compression;
use super::deb822::ParagraphReader;
use super::error::DebianError;
use super::fetch::{Cache, Expected, Fetch, Sha256, display_url};
use super::keyring::Keyring;
use super::relation::{Provided, parse_provides};
use super::release::Release;
use super::version::Version;

/// `InRelease` files larger than this are refused (Debian's are ~150 KiB).
const MAX_INRELEASE: u64 = 16 << 20;
/// `Packages` indexes larger than this are refused (bookworm main: 12 MB gzip).
const MAX_PACKAGES: u64 = 512 << 20;

/// Which pocket of a suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PocketKind {
    /// The suite itself (`bookworm`), from the mirror.
    Release,
    /// `SUITE-updates`, from the mirror.
    Updates,
    /// `SUITE-security`, from the security mirror.
    Security,
}

impl PocketKind {
    /// The pocket's name for `suite` (`bookworm-security`).
    pub fn name(self, suite: &str) -> String {
        match self {
            PocketKind::Release => suite.to_owned(),
            PocketKind::Updates => format!("{suite}-updates"),
            PocketKind::Security => format!("{suite}-security"),
        }
    }
}

/// Where a suite's packages come from. Plain data; `settings` fills it.
#[derive(Clone, Debug)]
pub struct Sources {
    /// The mirror (`http://deb.debian.org/debian`).
    pub mirror: Url,
    /// The security mirror (`http://deb.debian.org/debian-security`).
    pub security_mirror: Url,
    /// The suite's codename (`bookworm`, `trixie`).
    pub suite: String,
    /// Debian's architecture name (`amd64`, `arm64`).
    pub architecture: String,
    /// Components (`main`).
    pub components: Vec<String>,
    /// Pockets searched, all three by default: a runner without the
    /// security fixes is not a runner.
    pub pockets: Vec<PocketKind>,
    /// The keys `InRelease` must be signed with.
    pub keyring: Keyring,
}

/// Debian's official mirror.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Debian's official security mirror.
pub const DEFAULT_SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

impl Sources {
    /// Debian's official mirrors, `main`, every pocket, the built-in keys.
    pub fn debian(suite: &str, architecture: &str) -> Sources {
        Sources {
            mirror: Url::parse(DEFAULT_MIRROR).expect("a valid URL"),
            security_mirror: Url::parse(DEFAULT_SECURITY_MIRROR).expect("a valid URL"),
            suite: suite.to_owned(),
            architecture: architecture.to_owned(),
            components: vec!["main".into()],
            pockets: vec![
                PocketKind::Release,
                PocketKind::Updates,
                PocketKind::Security,
            ],
            keyring: Keyring::debian(),
        }
    }

    /// The mirror a pocket is served from.
    pub fn mirror_of(&self, kind: PocketKind) -> &Url {
        match kind {
            PocketKind::Security => &self.security_mirror,
            _ => &self.mirror,
        }
    }

    /// `MIRROR/PATH` (the mirror URL taken as a directory).
    pub fn url(&self, kind: PocketKind, path: &str) -> Result<Url, DebianError> {
        join(self.mirror_of(kind), path)
    }
}

pub(crate) fn join(base: &Url, path: &str) -> Result<Url, DebianError> {
    let mut b = base.clone();
    if !b.path().ends_with('/') {
        let p = format!("{}/", b.path());
        b.set_path(&p);
    }
    b.join(path)
        .map_err(|e| DebianError::Usage(format!("mirror URL {}: {e}", display_url(base))))
}

/// `Multi-Arch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MultiArch {
    /// Not set.
    #[default]
    No,
    /// `same`: co-installable across architectures.
    Same,
    /// `foreign`: satisfies dependencies of any architecture.
    Foreign,
    /// `allowed`: may satisfy `pkg:any`.
    Allowed,
}

impl MultiArch {
    fn parse(v: Option<&str>) -> MultiArch {
        match v.map(str::trim) {
            Some("same") => MultiArch::Same,
            Some("foreign") => MultiArch::Foreign,
            Some("allowed") => MultiArch::Allowed,
            _ => MultiArch::No,
        }
    }
}

/// One binary package of an index, with what resolution and download need.
/// Relation fields are kept as written and parsed when visited; the text
/// fields share one allocation (an index holds tens of thousands of these,
/// and memory must stay bounded).
#[derive(Clone, Debug)]
pub struct Candidate {
    /// name, architecture, Depends, Pre-Depends, Conflicts, Breaks, Filename.
    text: Box<str>,
    ends: [u32; 7],
    /// `Version`.
    pub version: Version,
    /// `Multi-Arch`.
    pub multi_arch: MultiArch,
    /// `Essential: yes`.
    pub essential: bool,
    /// `Priority`, ranked: required 0, important 1, standard 2, optional 3, extra 4.
    pub priority: u8,
    /// The pocket's index in [`Archive::pockets`].
    pub pocket: usize,
    /// `Provides`, parsed.
    pub provides: Vec<Provided>,
    /// `Size`.
    pub size: u64,
    /// `SHA256`.
    pub sha256: Sha256,
}

/// The text fields of a [`Candidate`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CandidateText<'a> {
    /// `Package`.
    pub name: &'a str,
    /// `Architecture` (ours or `all`).
    pub architecture: &'a str,
    /// `Depends`, as written.
    pub depends: &'a str,
    /// `Pre-Depends`, as written.
    pub pre_depends: &'a str,
    /// `Conflicts`, as written.
    pub conflicts: &'a str,
    /// `Breaks`, as written.
    pub breaks: &'a str,
    /// `Filename` (the pool path).
    pub filename: &'a str,
}

/// The other fields of a [`Candidate`], as [`Candidate::new`] takes them.
#[derive(Clone, Debug)]
pub struct CandidateInfo {
    /// `Version`.
    pub version: Version,
    /// `Multi-Arch`.
    pub multi_arch: MultiArch,
    /// `Essential: yes`.
    pub essential: bool,
    /// `Priority`, ranked.
    pub priority: u8,
    /// The pocket's index.
    pub pocket: usize,
    /// `Provides`.
    pub provides: Vec<Provided>,
    /// `Size`.
    pub size: u64,
    /// `SHA256`.
    pub sha256: Sha256,
}

impl Candidate {
    /// A candidate from its fields.
    pub fn new(text: CandidateText<'_>, info: CandidateInfo) -> Candidate {
        let CandidateInfo {
            version,
            multi_arch,
            essential,
            priority,
            pocket,
            provides,
            size,
            sha256,
        } = info;
        let parts = [
            text.name,
            text.architecture,
            text.depends,
            text.pre_depends,
            text.conflicts,
            text.breaks,
            text.filename,
        ];
        let mut all = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u32; 7];
        for (i, p) in parts.iter().enumerate() {
            all.push_str(p);
            ends[i] = u32::try_from(all.len()).unwrap_or(u32::MAX);
        }
        Candidate {
            text: all.into_boxed_str(),
            ends,
            version,
            multi_arch,
            essential,
            priority,
            pocket,
            provides,
            size,
            sha256,
        }
    }

    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text
            .get(start..self.ends[i] as usize)
            .unwrap_or_default()
    }

    /// `Package`.
    pub fn name(&self) -> &str {
        self.part(0)
    }
    /// `Architecture` (ours or `all`).
    pub fn architecture(&self) -> &str {
        self.part(1)
    }
    /// `Depends`, as written.
    pub fn depends(&self) -> &str {
        self.part(2)
    }
    /// `Pre-Depends`, as written.
    pub fn pre_depends(&self) -> &str {
        self.part(3)
    }
    /// `Conflicts`, as written.
    pub fn conflicts(&self) -> &str {
        self.part(4)
    }
    /// `Breaks`, as written.
    pub fn breaks(&self) -> &str {
        self.part(5)
    }
    /// `Filename` (the pool path).
    pub fn filename(&self) -> &str {
        self.part(6)
    }
}

fn priority_rank(p: Option<&str>) -> u8 {
    match p.map(str::trim) {
        Some("required") => 0,
        Some("important") => 1,
        Some("standard") => 2,
        Some("optional") => 3,
        _ => 4,
    }
}

/// One pocket as fetched.
#[derive(Clone, Debug)]
pub struct Pocket {
    /// Which pocket.
    pub kind: PocketKind,
    /// Its name (`bookworm-security`).
    pub name: String,
    /// Its verified `InRelease`.
    pub release: Release,
}

/// The packages of every pocket of a suite.
#[derive(Clone, Debug)]
pub struct Archive {
    /// The sources it was read from.
    pub sources: Sources,
    /// The pockets, in the order of `sources.pockets`.
    pub pockets: Vec<Pocket>,
    /// Every candidate of every pocket, sorted by name, then version
    /// (highest first), then pocket.
    pub packages: Vec<Candidate>,
    providers: HashMap<String, Vec<usize>>,
}

impl Archive {
    /// Fetch (or take from the cache) and verify every pocket's
    /// `InRelease` and `Packages`, at time `now`. Pockets load in parallel.
    pub fn open(
        fetch: &dyn Fetch,
        cache: &Cache,
        sources: &Sources,
        now: SystemTime,
    ) -> Result<Archive, DebianError> {
        // Downloads and signature checks in parallel; parsing in this
        // thread, one index at a time, so memory holds one parse at once.
        let loaded: Vec<Result<Fetched, DebianError>> = std::thread::scope(|s| {
            let handles: Vec<_> = sources
                .pockets
                .iter()
                .map(|&kind| s.spawn(move || load_pocket(fetch, cache, sources, kind, now)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let loaded: Vec<Fetched> = loaded.into_iter().collect::<Result<_, _>>()?;
        let estimate: u64 = loaded
            .iter()
            .flat_map(|(_, ix)| ix.iter())
            .map(|(_, _, _, plain)| plain.unwrap_or(0) / MIN_PARAGRAPH + 16)
            .sum();
        let mut pockets = Vec::new();
        let mut packages = Vec::with_capacity(usize::try_from(estimate).unwrap_or(0).min(1 << 20));
        for (i, (pocket, indexes)) in loaded.into_iter().enumerate() {
            pockets.push(pocket);
            for (file, path, what, _) in indexes {
                let comp = Compression::of_name(&path).unwrap_or(Compression::None);
                let f = File::open(&file).map_err(DebianError::io("opening", &file))?;
                let reader = comp
                    .reader(f)
                    .map_err(DebianError::io("decompressing", &file))?;
                parse_packages(
                    BufReader::with_capacity(256 * 1024, reader),
                    &sources.architecture,
                    i,
                    &what,
                    &mut packages,
                )?;
            }
        }
        packages.shrink_to_fit();
        Ok(Archive::from_parts(sources.clone(), pockets, packages))
    }

    /// An archive from candidates already at hand (tests, other sources).
    pub fn from_parts(
        sources: Sources,
        pockets: Vec<Pocket>,
        mut packages: Vec<Candidate>,
    ) -> Archive {
        // In place: a merge sort's buffer would be half the index again.
        packages.sort_unstable_by(|a, b| {
            a.name()
                .cmp(b.name())
                .then_with(|| b.version.cmp(&a.version))
                .then(a.pocket.cmp(&b.pocket))
        });
        let mut providers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in packages.iter().enumerate() {
            for p in &c.provides {
                providers.entry(p.name.clone()).or_default().push(i);
            }
        }
        Archive {
            sources,
            pockets,
            packages,
            providers,
        }
    }

    /// The candidates named `name`, highest version first (ties: earlier
    /// pocket first).
    pub fn named(&self, name: &str) -> Vec<&Candidate> {
        self.named_indices(name)
            .into_iter()
            .map(|i| &self.packages[i])
            .collect()
    }

    /// [`Archive::named`], as indices into `packages`.
    pub fn named_indices(&self, name: &str) -> Vec<usize> {
        let start = self.packages.partition_point(|c| c.name() < name);
        let end = start + self.packages[start..].partition_point(|c| c.name() == name);
        (start..end).collect()
    }

    /// The candidates that provide the virtual package `name`.
    pub fn providers(&self, name: &str) -> Vec<&Candidate> {
        self.provider_indices(name)
            .into_iter()
            .map(|i| &self.packages[i])
            .collect()
    }

    /// [`Archive::providers`], as indices into `packages`.
    pub fn provider_indices(&self, name: &str) -> Vec<usize> {
        self.providers.get(name).cloned().unwrap_or_default()
    }

    /// `suite (pocket, pocket)` for messages.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.pockets.iter().map(|p| p.name.as_str()).collect();
        format!("{} [{}]", self.sources.suite, names.join(", "))
    }
}

/// The compressions tried for an index, fastest to decode first.
const INDEX_FORMS: [&str; 3] = [".gz", ".xz", ""];

/// A pocket's verified `InRelease` and its `Packages` files in the cache:
/// (file, path in the archive, description, uncompressed size if listed).
type Fetched = (
    Pocket,
    Vec<(std::path::PathBuf, String, String, Option<u64>)>,
);

/// Bytes of `Packages` text per package, at least (Debian's average is
/// ~790): sizes the candidate list once instead of doubling it.
const MIN_PARAGRAPH: u64 = 700;

/// A pocket's `InRelease`, fetched (never cached: it is the root of trust
/// and changes) and verified with the sources' keyring.
pub(crate) fn signed_release(
    fetch: &dyn Fetch,
    cache: &Cache,
    sources: &Sources,
    kind: PocketKind,
    now: SystemTime,
) -> Result<Release, DebianError> {
    let name = kind.name(&sources.suite);
    let url = sources.url(kind, &format!("dists/{name}/InRelease"))?;
    let shown = display_url(&url);
    let tmp = cache.temp_path("InRelease")?;
    let got = fetch.get(&url, &tmp, MAX_INRELEASE);
    let bytes = got
        .map_err(DebianError::from)
        .and_then(|_| std::fs::read(&tmp).map_err(DebianError::io("reading", &tmp)));
    let _ = std::fs::remove_file(&tmp);
    Release::verify(&bytes?, &shown, &name, &sources.keyring, now)
}

/// An index file `path` that a verified `InRelease` lists, from the cache
/// or the mirror (by hash when the archive offers it), checked against the
/// signed hash and refused above `max` bytes. Returns the cached file and
/// how it is named in messages.
pub(crate) fn signed_index_file(
    fetch: &dyn Fetch,
    cache: &Cache,
    sources: &Sources,
    kind: PocketKind,
    release: &Release,
    path: &str,
    max: u64,
) -> Result<(std::path::PathBuf, String), DebianError> {
    let name = kind.name(&sources.suite);
    let entry = release.file(path).ok_or_else(|| DebianError::Release {
        url: release.url.clone(),
        reason: format!("it lists no {path}"),
    })?;
    let mut urls = Vec::new();
    if release.by_hash {
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        urls.push(sources.url(
            kind,
            &format!("dists/{name}/{dir}/by-hash/SHA256/{}", entry.sha256),
        )?);
    }
    urls.push(sources.url(kind, &format!("dists/{name}/{path}"))?);
    let what = format!("{path} of {name}");
    if entry.size > max {
        return Err(DebianError::Release {
            url: release.url.clone(),
            reason: format!("{path} is implausibly large ({} bytes)", entry.size),
        });
    }
    let file = cache.fetch(
        fetch,
        &urls,
        &Expected {
            sha256: entry.sha256,
            size: entry.size,
            what: &what,
            source_of_truth: "its signed InRelease",
        },
    )?;
    Ok((file, what))
}

fn load_pocket(
    fetch: &dyn Fetch,
    cache: &Cache,
    sources: &Sources,
    kind: PocketKind,
    now: SystemTime,
) -> Result<Fetched, DebianError> {
    let name = kind.name(&sources.suite);
    let release = signed_release(fetch, cache, sources, kind, now)?;
    let mut indexes = Vec::new();
    for component in &sources.components {
        let base = format!("{component}/binary-{}/Packages", sources.architecture);
        let Some(path) = INDEX_FORMS
            .iter()
            .map(|ext| format!("{base}{ext}"))
            .find(|p| release.file(p).is_some())
        else {
            return Err(DebianError::Release {
                url: release.url.clone(),
                reason: format!(
                    "it lists no {base} index (is {} an architecture of {name}?)",
                    sources.architecture
                ),
            });
        };
        let (file, what) =
            signed_index_file(fetch, cache, sources, kind, &release, &path, MAX_PACKAGES)?;
        let plain = release.file(&base).map(|e| e.size);
        indexes.push((file, path, what, plain));
    }
    Ok((
        Pocket {
            kind,
            name,
            release,
        },
        indexes,
    ))
}

/// Read a `Packages` stream into `out`, keeping the packages of `arch`
/// and `all`. `what` names the index in errors.
pub fn parse_packages<R: std::io::BufRead>(
    reader: R,
    arch: &str,
    pocket: usize,
    what: &str,
    out: &mut Vec<Candidate>,
) -> Result<(), DebianError> {
    let mut r = ParagraphReader::new(reader);
    let bad = |reason: String| DebianError::Index {
        what: what.to_owned(),
        reason,
    };
    while let Some(p) = r.next_paragraph().map_err(|e| bad(e.to_string()))? {
        let a = p.get("Architecture").unwrap_or_default();
        if a != arch && a != "all" {
            continue;
        }
        let name = p
            .get("Package")
            .ok_or_else(|| bad("a paragraph without Package".into()))?;
        let field = |f: &str| {
            p.get(f)
                .ok_or_else(|| bad(format!("package {name}: no {f} field")))
        };
        let version =
            Version::parse(field("Version")?).map_err(|e| bad(format!("package {name}: {e}")))?;
        let sha256 = Sha256::from_hex(field("SHA256")?)
            .ok_or_else(|| bad(format!("package {name}: SHA256 is not a sha256")))?;
        let size = field("Size")?
            .parse()
            .map_err(|_| bad(format!("package {name}: Size is not a number")))?;
        let provides = parse_provides(p.get("Provides").unwrap_or_default())
            .map_err(|e| bad(format!("package {name}: Provides: {e}")))?;
        let text = |f: &str| p.get(f).unwrap_or_default();
        out.push(Candidate::new(
            CandidateText {
                name,
                architecture: a,
                depends: text("Depends"),
                pre_depends: text("Pre-Depends"),
                conflicts: text("Conflicts"),
                breaks: text("Breaks"),
                filename: field("Filename")?,
            },
            CandidateInfo {
                version,
                multi_arch: MultiArch::parse(p.get("Multi-Arch")),
                essential: p
                    .get("Essential")
                    .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
                priority: priority_rank(p.get("Priority")),
                pocket,
                provides,
                size,
                sha256,
            },
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
