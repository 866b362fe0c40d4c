//! Dependency resolution: requested names (`NAME`, `NAME=VERSION`) → the
//! closed set of packages to add, apt-style (greedy, no Recommends):
//! `Pre-Depends` and `Depends` followed with their `|` alternatives in
//! order, the highest candidate across pockets, virtual packages through
//! `Provides`, `Conflicts`/`Breaks` steering the choice, and whatever the
//! base already has at a satisfying version left out. Every chosen package
//! says why it is in.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use super::base::BaseFacts;
use super::error::DebianError;
use super::index::{Archive, Candidate, MultiArch};
use super::relation::{Alternative, ArchQualifier, Relation, parse_relations};
use super::version::Version;

/// What the user asked for: `NAME` or `NAME=VERSION`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Request {
    /// The package (or virtual package) name.
    pub name: String,
    /// An exact version, if pinned.
    pub version: Option<String>,
}

impl Request {
    /// Parse `NAME` or `NAME=VERSION`.
    pub fn parse(text: &str) -> Result<Request, DebianError> {
        let t = text.trim();
        let (name, version) = match t.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (t, None),
        };
        let valid = name.len() >= 2
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
        if !valid {
            return Err(DebianError::Usage(format!(
                "{t:?}: {name:?} is not a Debian package name (lower-case letters, digits, `+-.`)"
            )));
        }
        if let Some(v) = version {
            Version::parse(v).map_err(|e| DebianError::Usage(format!("{t:?}: {e}")))?;
        }
        Ok(Request {
            name: name.to_owned(),
            version: version.map(str::to_owned),
        })
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}={v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Why a package is in the set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// It was asked for (the request as written).
    Requested(String),
    /// A chosen package needs it.
    Dependency {
        /// `NAME VERSION` of the package that needs it.
        by: String,
        /// `Depends` or `Pre-Depends`.
        field: &'static str,
        /// The relation it satisfies, as written.
        relation: String,
    },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Requested(r) => write!(f, "requested ({r})"),
            Why::Dependency {
                by,
                field,
                relation,
            } => write!(f, "{by} {field}: {relation}"),
        }
    }
}

/// A package chosen, and why.
#[derive(Clone, Debug)]
pub struct Chosen {
    /// The candidate.
    pub candidate: Candidate,
    /// Why it is in.
    pub why: Why,
}

/// A relation the base already satisfies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InBase {
    /// The relation (or request), as written.
    pub relation: String,
    /// Who needed it.
    pub needed_by: String,
    /// `NAME VERSION` of the base's package that satisfies it.
    pub satisfied_by: String,
}

/// A relation left unsatisfied on purpose (its packages are excluded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The relation, as written.
    pub relation: String,
    /// Who needed it.
    pub needed_by: String,
}

/// The outcome of a resolution.
#[derive(Clone, Debug, Default)]
pub struct Resolution {
    /// The packages to add, sorted by name.
    pub packages: Vec<Chosen>,
    /// Requests and relations the base satisfies.
    pub in_base: Vec<InBase>,
    /// Relations not followed because of `exclude`.
    pub dropped: Vec<Dropped>,
}

/// What to resolve, against what.
#[derive(Clone, Copy, Debug)]
pub struct ResolveOptions<'a> {
    /// The requests.
    pub requests: &'a [Request],
    /// What the base already has.
    pub base: &'a BaseFacts,
    /// Packages never added even when something depends on them (a
    /// `deb:` base leaves out dpkg, debconf and perl, whose only users are
    /// the maintainer scripts the tool does not run).
    pub exclude: &'a [String],
}

struct Resolver<'a> {
    archive: &'a Archive,
    opts: ResolveOptions<'a>,
    arch: &'a str,
    chosen: BTreeMap<String, (usize, Why)>,
    queue: VecDeque<(Relation, String, &'static str)>,
    out: Resolution,
}

fn id(c: &Candidate) -> String {
    format!("{} {}", c.name(), c.version)
}

/// Resolve the requests against the archive.
pub fn resolve(archive: &Archive, opts: ResolveOptions<'_>) -> Result<Resolution, DebianError> {
    let mut r = Resolver {
        archive,
        opts,
        arch: &archive.sources.architecture,
        chosen: BTreeMap::new(),
        queue: VecDeque::new(),
        out: Resolution::default(),
    };
    for req in opts.requests {
        r.request(req)?;
    }
    while let Some((rel, by, field)) = r.queue.pop_front() {
        r.relation(&rel, &by, field)?;
    }
    let mut packages: Vec<Chosen> = r
        .chosen
        .into_values()
        .map(|(i, why)| Chosen {
            candidate: archive.packages[i].clone(),
            why,
        })
        .collect();
    packages.sort_by(|a, b| a.candidate.name().cmp(b.candidate.name()));
    r.out.packages = packages;
    Ok(r.out)
}

impl Resolver<'_> {
    fn request(&mut self, req: &Request) -> Result<(), DebianError> {
        let shown = req.to_string();
        if let Some(have) = self.opts.base.installed.get(&req.name) {
            let fits = req
                .version
                .as_deref()
                .is_none_or(|v| Version::parse(v).is_ok_and(|v| v == have.version));
            if fits {
                self.out.in_base.push(InBase {
                    relation: shown.clone(),
                    needed_by: "the request".into(),
                    satisfied_by: format!("{} {}", have.name, have.version),
                });
                return Ok(());
            }
        }
        let pkgs = &self.archive.packages;
        let named = self.archive.named_indices(&req.name);
        let pick = match &req.version {
            Some(v) => {
                let want = Version::parse(v).map_err(|e| DebianError::Usage(e.to_string()))?;
                named.iter().copied().find(|&i| pkgs[i].version == want)
            }
            None => named.first().copied(),
        };
        let pick = match pick {
            Some(i) => i,
            None if named.is_empty() && req.version.is_none() => {
                let mut providers = self.archive.provider_indices(&req.name);
                providers.sort_by(|&a, &b| {
                    pkgs[a]
                        .name()
                        .cmp(pkgs[b].name())
                        .then(pkgs[b].version.cmp(&pkgs[a].version))
                });
                providers.dedup_by(|b, a| pkgs[*a].name() == pkgs[*b].name());
                match providers.as_slice() {
                    [one] => *one,
                    [] => return Err(self.unknown(&shown, String::new())),
                    many => {
                        let names: Vec<&str> = many.iter().map(|&i| pkgs[i].name()).collect();
                        return Err(self.unknown(
                            &shown,
                            format!(
                                "; it is a virtual package: ask for one of {}",
                                names.join(", ")
                            ),
                        ));
                    }
                }
            }
            None => {
                let have: Vec<String> =
                    named.iter().map(|&i| pkgs[i].version.to_string()).collect();
                let hint = if have.is_empty() {
                    String::new()
                } else {
                    format!(" at that version (it has {})", have.join(", "))
                };
                return Err(self.unknown(&shown, hint));
            }
        };
        self.choose(pick, Why::Requested(shown.clone()), &shown)
    }

    fn unknown(&self, request: &str, hint: String) -> DebianError {
        DebianError::UnknownPackage {
            request: request.to_owned(),
            suite: self.archive.describe(),
            architecture: self.arch.to_owned(),
            hint,
        }
    }

    /// Add a candidate (after checking conflicts) and queue its relations.
    fn choose(&mut self, i: usize, why: Why, needed_for: &str) -> Result<(), DebianError> {
        let c = &self.archive.packages[i];
        if let Some((j, _)) = self.chosen.get(c.name()) {
            if *j == i || self.archive.packages[*j].version == c.version {
                return Ok(());
            }
            return Err(DebianError::Unsatisfiable {
                relation: needed_for.to_owned(),
                needed_by: why.to_string(),
                reason: format!(
                    "it needs {} but {} is already chosen",
                    id(c),
                    id(&self.archive.packages[*j])
                ),
            });
        }
        if let Some(reason) = self.conflict(c)? {
            return Err(DebianError::Unsatisfiable {
                relation: needed_for.to_owned(),
                needed_by: why.to_string(),
                reason,
            });
        }
        self.chosen.insert(c.name().to_owned(), (i, why));
        let me = id(c);
        for (field, text) in [("Pre-Depends", c.pre_depends()), ("Depends", c.depends())] {
            for rel in self.parse(c, field, text)? {
                self.queue.push_back((rel, me.clone(), field));
            }
        }
        Ok(())
    }

    fn parse(&self, c: &Candidate, field: &str, text: &str) -> Result<Vec<Relation>, DebianError> {
        parse_relations(text).map_err(|e| DebianError::Index {
            what: format!("Packages of {}", self.archive.describe()),
            reason: format!("{} {field}: {e}", id(c)),
        })
    }

    /// Why `c` cannot join the chosen set (its Conflicts/Breaks hit a
    /// chosen or installed package, or a chosen package's hit it).
    fn conflict(&self, c: &Candidate) -> Result<Option<String>, DebianError> {
        for field in ["Conflicts", "Breaks"] {
            let text = if field == "Conflicts" {
                c.conflicts()
            } else {
                c.breaks()
            };
            for rel in self.parse(c, field, text)? {
                for alt in &rel.alternatives {
                    for (j, _) in self.chosen.values() {
                        let o = &self.archive.packages[*j];
                        if o.name() != c.name() && self.candidate_matches(o, alt) {
                            return Ok(Some(format!(
                                "{} {field}: {alt}, and {} is chosen",
                                id(c),
                                id(o)
                            )));
                        }
                    }
                    if let Some(have) = self.opts.base.installed.get(&alt.name) {
                        let hit = alt
                            .constraint
                            .as_ref()
                            .is_none_or(|k| k.allows(&have.version));
                        if hit && have.name != c.name() {
                            return Ok(Some(format!(
                                "{} {field}: {alt}, and the base has {} {}",
                                id(c),
                                have.name,
                                have.version
                            )));
                        }
                    }
                }
            }
        }
        for (j, _) in self.chosen.values() {
            let o = &self.archive.packages[*j];
            for field in ["Conflicts", "Breaks"] {
                let text = if field == "Conflicts" {
                    o.conflicts()
                } else {
                    o.breaks()
                };
                for rel in self.parse(o, field, text)? {
                    for alt in &rel.alternatives {
                        if o.name() != c.name() && self.candidate_matches(c, alt) {
                            return Ok(Some(format!("{} {field}: {alt}", id(o))));
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    fn arch_ok(&self, arch: &str, multi_arch: MultiArch, q: &ArchQualifier) -> bool {
        let native = arch == self.arch || arch == "all";
        match q {
            ArchQualifier::None | ArchQualifier::Native => native,
            ArchQualifier::Any => multi_arch == MultiArch::Allowed,
            ArchQualifier::Named(a) => arch == a || (arch == "all" && a == self.arch),
        }
    }

    /// Whether a candidate satisfies an alternative: by name (version and
    /// architecture checked) or through its Provides (a versioned relation
    /// only through a versioned Provides).
    fn candidate_matches(&self, c: &Candidate, alt: &Alternative) -> bool {
        if c.name() == alt.name {
            return self.arch_ok(c.architecture(), c.multi_arch, &alt.arch)
                && alt.constraint.as_ref().is_none_or(|k| k.allows(&c.version));
        }
        c.provides.iter().any(|p| {
            p.name == alt.name
                && match (&alt.constraint, &p.version) {
                    (None, _) => true,
                    (Some(k), Some(v)) => k.allows(v),
                    (Some(_), None) => false,
                }
        }) && (matches!(alt.arch, ArchQualifier::None | ArchQualifier::Native)
            || self.arch_ok(c.architecture(), c.multi_arch, &alt.arch))
    }

    fn installed_match(&self, alt: &Alternative) -> Option<String> {
        let base = &self.opts.base.installed;
        if let Some(h) = base.get(&alt.name) {
            if self.arch_ok(&h.architecture, h.multi_arch, &alt.arch)
                && alt.constraint.as_ref().is_none_or(|k| k.allows(&h.version))
            {
                return Some(format!("{} {}", h.name, h.version));
            }
        }
        base.values().find_map(|h| {
            let hit = h.provides.iter().any(|p| {
                p.name == alt.name
                    && match (&alt.constraint, &p.version) {
                        (None, _) => true,
                        (Some(k), Some(v)) => k.allows(v),
                        (Some(_), None) => false,
                    }
            });
            hit.then(|| format!("{} {} (provides {})", h.name, h.version, alt.name))
        })
    }

    fn relation(
        &mut self,
        rel: &Relation,
        by: &str,
        field: &'static str,
    ) -> Result<(), DebianError> {
        let alts: Vec<&Alternative> = rel
            .alternatives
            .iter()
            .filter(|a| a.applies_on(self.arch))
            .collect();
        if alts.is_empty() {
            return Ok(());
        }
        // Already satisfied by a chosen package?
        for alt in &alts {
            if self
                .chosen
                .values()
                .any(|(j, _)| self.candidate_matches(&self.archive.packages[*j], alt))
            {
                return Ok(());
            }
        }
        // By the base?
        for alt in &alts {
            if let Some(have) = self.installed_match(alt) {
                self.out.in_base.push(InBase {
                    relation: rel.to_string(),
                    needed_by: by.to_owned(),
                    satisfied_by: have,
                });
                return Ok(());
            }
        }
        let why = Why::Dependency {
            by: by.to_owned(),
            field,
            relation: rel.to_string(),
        };
        let mut excluded = false;
        let mut reasons = Vec::new();
        let pkgs = &self.archive.packages;
        for alt in &alts {
            let mut cands: Vec<usize> = self
                .archive
                .named_indices(&alt.name)
                .into_iter()
                .filter(|&i| self.candidate_matches(&pkgs[i], alt))
                .collect();
            if cands.is_empty() {
                let mut provs: Vec<usize> = self
                    .archive
                    .provider_indices(&alt.name)
                    .into_iter()
                    .filter(|&i| self.candidate_matches(&pkgs[i], alt))
                    .collect();
                // Deterministic preference among providers: priority, then
                // name, newest first.
                provs.sort_by(|&a, &b| {
                    let (a, b) = (&pkgs[a], &pkgs[b]);
                    a.priority
                        .cmp(&b.priority)
                        .then(a.name().cmp(b.name()))
                        .then(b.version.cmp(&a.version))
                });
                cands = provs;
            }
            if cands.is_empty() {
                let mut have: Vec<String> = self
                    .archive
                    .named(&alt.name)
                    .iter()
                    .map(|c| id(c))
                    .collect();
                for c in self.archive.providers(&alt.name) {
                    for p in c.provides.iter().filter(|p| p.name == alt.name) {
                        have.push(match &p.version {
                            Some(v) => format!("{} (provides {} = {v})", id(c), p.name),
                            None => format!("{} (provides {})", id(c), p.name),
                        });
                    }
                }
                reasons.push(if have.is_empty() {
                    format!("no package {} in {}", alt.name, self.archive.describe())
                } else {
                    format!("{alt} is not met by {}", have.join(", "))
                });
                continue;
            }
            for i in cands {
                let c = &pkgs[i];
                if self.opts.exclude.iter().any(|x| x == c.name()) {
                    excluded = true;
                    reasons.push(format!("{} is excluded", c.name()));
                    continue;
                }
                match self.conflict(c)? {
                    Some(r) => reasons.push(r),
                    None => return self.choose(i, why, &rel.to_string()),
                }
            }
        }
        if excluded {
            self.out.dropped.push(Dropped {
                relation: rel.to_string(),
                needed_by: by.to_owned(),
            });
            return Ok(());
        }
        Err(DebianError::Unsatisfiable {
            relation: rel.to_string(),
            needed_by: format!("{by}, {field}"),
            reason: reasons.join("; "),
        })
    }
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
