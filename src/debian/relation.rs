//! Package relations (`Depends`, `Pre-Depends`, `Conflicts`, `Breaks`,
//! `Provides`): comma-separated groups of `|` alternatives, each a name
//! with an optional architecture qualifier (`:any`, `:native`, `:amd64`)
//! and version relation (`<< <= = >= >>`), as Debian policy §7.1 writes
//! them.

use std::fmt;

use super::version::{Version, VersionError};

/// A version relation operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `<<`: strictly earlier.
    Lt,
    /// `<=` (and the obsolete `<`).
    Le,
    /// `=`.
    Eq,
    /// `>=` (and the obsolete `>`).
    Ge,
    /// `>>`: strictly later.
    Gt,
}

impl Op {
    /// Whether `have OP want` holds.
    pub fn holds(self, have: &Version, want: &Version) -> bool {
        use std::cmp::Ordering::*;
        let o = have.cmp(want);
        match self {
            Op::Lt => o == Less,
            Op::Le => o != Greater,
            Op::Eq => o == Equal,
            Op::Ge => o != Less,
            Op::Gt => o == Greater,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        }
    }
}

/// `(OP VERSION)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    /// The operator.
    pub op: Op,
    /// The version.
    pub version: Version,
}

impl Constraint {
    /// Whether `version` satisfies it.
    pub fn allows(&self, version: &Version) -> bool {
        self.op.holds(version, &self.version)
    }
}

/// The architecture qualifier after a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchQualifier {
    /// None: the package's own architecture (or `all`, or a
    /// `Multi-Arch: foreign` package of any architecture).
    None,
    /// `:any`: any architecture, if the package is `Multi-Arch: allowed`.
    Any,
    /// `:native`: the native architecture.
    Native,
    /// `:ARCH`, a named one.
    Named(String),
}

/// One alternative of a relation: `name[:arch] [(op version)]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alternative {
    /// The package (or virtual package) name.
    pub name: String,
    /// Its architecture qualifier.
    pub arch: ArchQualifier,
    /// Its version relation, if any.
    pub constraint: Option<Constraint>,
    /// A source package's architecture restriction (`[amd64 !i386]`):
    /// (negated, arch). Empty in binary packages.
    pub restrict: Vec<(bool, String)>,
}

impl Alternative {
    /// Whether this alternative applies on `arch` (its `[...]` list).
    pub fn applies_on(&self, arch: &str) -> bool {
        if self.restrict.is_empty() {
            return true;
        }
        let negated = self.restrict.iter().all(|(neg, _)| *neg);
        let hit = self.restrict.iter().any(|(_, a)| a == arch || a == "any");
        if negated {
            !self.restrict.iter().any(|(_, a)| a == arch)
        } else {
            hit
        }
    }
}

/// One comma-separated group: any alternative satisfies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    /// The `|`-separated alternatives, in their order of preference.
    pub alternatives: Vec<Alternative>,
}

/// A relation field that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a package relation: {reason}")]
pub struct RelationError {
    /// The part that failed.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

fn valid_name(name: &str) -> bool {
    name.len() >= 2
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// Parse one alternative (`libc6 (>= 2.34)`, `python3:any`).
pub fn parse_alternative(text: &str) -> Result<Alternative, RelationError> {
    let err = |reason: &str| RelationError {
        text: text.trim().to_owned(),
        reason: reason.to_owned(),
    };
    let mut rest = text.trim();
    // Build profiles `<…>` apply to source packages only; drop them.
    while let Some(open) = rest.rfind('<') {
        if rest.ends_with('>') && !rest[open..].contains('(') {
            rest = rest[..open].trim_end();
        } else {
            break;
        }
    }
    let mut restrict = Vec::new();
    if let Some(open) = rest.find('[') {
        let close = rest.rfind(']').ok_or_else(|| err("an unclosed '['"))?;
        if close < open {
            return Err(err("a ']' before its '['"));
        }
        for a in rest[open + 1..close].split_whitespace() {
            match a.strip_prefix('!') {
                Some(a) => restrict.push((true, a.to_owned())),
                None => restrict.push((false, a.to_owned())),
            }
        }
        rest = rest[..open].trim_end();
    }
    let mut constraint = None;
    if let Some(open) = rest.find('(') {
        let inner = rest[open + 1..]
            .strip_suffix(')')
            .ok_or_else(|| err("an unclosed '('"))?
            .trim();
        let (op, v) = if let Some(v) = inner.strip_prefix("<<") {
            (Op::Lt, v)
        } else if let Some(v) = inner.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = inner.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = inner.strip_prefix(">>") {
            (Op::Gt, v)
        } else if let Some(v) = inner.strip_prefix('=') {
            (Op::Eq, v)
        } else if let Some(v) = inner.strip_prefix('<') {
            (Op::Le, v)
        } else if let Some(v) = inner.strip_prefix('>') {
            (Op::Ge, v)
        } else {
            return Err(err("no version operator (<< <= = >= >>)"));
        };
        let version = Version::parse(v.trim()).map_err(|e: VersionError| err(e.reason))?;
        constraint = Some(Constraint { op, version });
        rest = rest[..open].trim_end();
    }
    let (name, arch) = match rest.split_once(':') {
        Some((n, "any")) => (n, ArchQualifier::Any),
        Some((n, "native")) => (n, ArchQualifier::Native),
        Some((n, a)) if !a.is_empty() => (n, ArchQualifier::Named(a.to_owned())),
        Some(_) => return Err(err("an empty architecture after ':'")),
        None => (rest, ArchQualifier::None),
    };
    if !valid_name(name) {
        return Err(err("not a package name"));
    }
    Ok(Alternative {
        name: name.to_owned(),
        arch,
        constraint,
        restrict,
    })
}

/// Parse a relation field (empty → no relation). Trailing commas and
/// line breaks are accepted.
pub fn parse_relations(text: &str) -> Result<Vec<Relation>, RelationError> {
    let mut out = Vec::new();
    for group in text.split(',') {
        if group.trim().is_empty() {
            continue;
        }
        let alternatives = group
            .split('|')
            .map(parse_alternative)
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Relation { alternatives });
    }
    Ok(out)
}

/// One `Provides` entry: a virtual name, with a version only as `(= V)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provided {
    /// The virtual package name.
    pub name: String,
    /// The version provided, if stated.
    pub version: Option<Version>,
}

/// Parse a `Provides` field.
pub fn parse_provides(text: &str) -> Result<Vec<Provided>, RelationError> {
    let mut out = Vec::new();
    for rel in parse_relations(text)? {
        let [alt] = rel.alternatives.as_slice() else {
            return Err(RelationError {
                text: text.trim().to_owned(),
                reason: "alternatives ('|') in Provides".into(),
            });
        };
        let version = match &alt.constraint {
            None => None,
            Some(c) if c.op == Op::Eq => Some(c.version.clone()),
            Some(_) => {
                return Err(RelationError {
                    text: text.trim().to_owned(),
                    reason: "Provides allows only '=' versions".into(),
                });
            }
        };
        out.push(Provided {
            name: alt.name.clone(),
            version,
        });
    }
    Ok(out)
}

impl fmt::Display for Alternative {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match &self.arch {
            ArchQualifier::None => {}
            ArchQualifier::Any => f.write_str(":any")?,
            ArchQualifier::Native => f.write_str(":native")?,
            ArchQualifier::Named(a) => write!(f, ":{a}")?,
        }
        if let Some(c) = &self.constraint {
            write!(f, " ({} {})", c.op.as_str(), c.version)?;
        }
        Ok(())
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.alternatives.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn groups_alternatives_operators_and_qualifiers_parse() {
        let rels = parse_relations(
            "libc6 (>= 2.34), libssl3 (>= 3.0.0) | libssl3t64,\n python3:any (<< 3.12), foo:native, bar:amd64 (= 1:2-3),",
        )
        .unwrap();
        assert_eq!(rels.len(), 5);
        assert_eq!(rels[0].to_string(), "libc6 (>= 2.34)");
        assert_eq!(rels[1].alternatives.len(), 2);
        assert_eq!(rels[1].to_string(), "libssl3 (>= 3.0.0) | libssl3t64");
        assert_eq!(rels[2].alternatives[0].arch, ArchQualifier::Any);
        assert_eq!(
            rels[2].alternatives[0].constraint.as_ref().unwrap().op,
            Op::Lt
        );
        assert_eq!(rels[3].alternatives[0].arch, ArchQualifier::Native);
        assert_eq!(
            parse_alternative("bar:amd64 (= 1:2-3)").unwrap().arch,
            ArchQualifier::Named("amd64".into())
        );
        assert!(parse_relations("").unwrap().is_empty());
    }

    #[test]
    fn every_operator_compares_by_debian_version_order() {
        let c = |s: &str| {
            parse_alternative(&s.replacen("a ", "pkg ", 1))
                .unwrap()
                .constraint
                .unwrap()
        };
        assert!(c("a (<< 1.0)").allows(&v("1.0~rc1")));
        assert!(!c("a (<< 1.0)").allows(&v("1.0")));
        assert!(c("a (<= 1.0)").allows(&v("1.0")));
        assert!(c("a (= 1.0)").allows(&v("0:1.0")));
        assert!(!c("a (= 1.0)").allows(&v("1.0-1")));
        assert!(c("a (>= 2.34)").allows(&v("2.36-9+deb12u14")));
        assert!(!c("a (>> 2.36)").allows(&v("2.36")));
        // Obsolete forms: < is <=, > is >=.
        assert_eq!(c("a (< 1)").op, Op::Le);
        assert_eq!(c("a (> 1)").op, Op::Ge);
    }

    #[test]
    fn provides_take_versions_only_with_equals() {
        let p = parse_provides("libssl3 (= 3.0.13-1), awk, c-shell").unwrap();
        assert_eq!(p[0].name, "libssl3");
        assert_eq!(p[0].version, Some(v("3.0.13-1")));
        assert_eq!(p[1].version, None);
        assert!(parse_provides("a (>= 1)").is_err());
        assert!(parse_provides("a | b").is_err());
    }

    #[test]
    fn source_only_restrictions_parse_and_apply_per_architecture() {
        let a = parse_alternative("libfoo [amd64 arm64] <!nocheck>").unwrap();
        assert_eq!(a.name, "libfoo");
        assert!(a.applies_on("amd64") && !a.applies_on("i386"));
        let n = parse_alternative("libbar [!i386]").unwrap();
        assert!(n.applies_on("amd64") && !n.applies_on("i386"));
    }

    #[test]
    fn malformed_relations_are_refused() {
        for bad in [
            "libc6 (>= 2.34",
            "libc6 (~ 1)",
            "Libc6",
            "a",
            "x (>= )",
            "foo:",
        ] {
            assert!(parse_relations(bad).is_err(), "{bad:?} accepted");
        }
    }
}
