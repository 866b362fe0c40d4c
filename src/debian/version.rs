//! Debian version numbers (`[epoch:]upstream[-revision]`) and their order,
//! as Debian policy §5.6.12 and dpkg define it.

use std::cmp::Ordering;
use std::fmt;

/// A parsed Debian version. Ordering is Debian's (`1.0~rc1 < 1.0 < 1.0+b1`,
/// `1:0.1 > 9.9`), not the strings'; equality follows that order, as dpkg's
/// does (`0:1.0` = `1.0` = `1.0-0`).
#[derive(Clone, Debug)]
pub struct Version {
    /// The version as written (trimmed): one allocation, the parts are
    /// ranges of it (an index holds tens of thousands of versions).
    text: Box<str>,
    epoch: u64,
    upstream: (u32, u32),
    revision: u32,
}

/// A string that is not a Debian version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a Debian version: {reason}")]
pub struct VersionError {
    /// What was given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Version {
    /// Parse `[epoch:]upstream[-revision]`. Upstream must start with a
    /// digit (dpkg only warns; the archive never has one that does not);
    /// the characters are those policy allows.
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        let err = |reason| VersionError {
            text: text.to_owned(),
            reason,
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(err("it is empty"));
        }
        if t.chars().any(char::is_whitespace) {
            return Err(err("it contains white space"));
        }
        if t.len() > u32::MAX as usize / 2 {
            return Err(err("it is too long"));
        }
        let (epoch, rest, rest_at) = match t.split_once(':') {
            Some((e, rest)) => {
                if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err("the epoch is not a number"));
                }
                let epoch = e.parse().map_err(|_| err("the epoch is too large"))?;
                (epoch, rest, e.len() + 1)
            }
            None => (0, t, 0),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((u, r)) => (u, r),
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return Err(err("the upstream version is empty"));
        }
        if !upstream.as_bytes()[0].is_ascii_digit() {
            return Err(err("the upstream version does not start with a digit"));
        }
        let ok_upstream = |c: char| c.is_ascii_alphanumeric() || ".+~-:".contains(c);
        if !upstream.chars().all(ok_upstream) {
            return Err(err("the upstream version has a character policy forbids"));
        }
        let ok_revision = |c: char| c.is_ascii_alphanumeric() || ".+~".contains(c);
        if rest.contains('-') && revision.is_empty() {
            return Err(err("the revision after '-' is empty"));
        }
        if !revision.chars().all(ok_revision) {
            return Err(err("the revision has a character policy forbids"));
        }
        let up_end = rest_at + upstream.len();
        let revision_at = if rest.contains('-') {
            up_end + 1
        } else {
            t.len()
        };
        Ok(Version {
            text: t.into(),
            epoch,
            upstream: (rest_at as u32, up_end as u32),
            revision: revision_at as u32,
        })
    }

    /// The epoch (0 when none is written).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The upstream part.
    pub fn upstream(&self) -> &str {
        &self.text[self.upstream.0 as usize..self.upstream.1 as usize]
    }

    /// The Debian revision ("" when none is written).
    pub fn revision(&self) -> &str {
        &self.text[self.revision as usize..]
    }

    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_part(self.upstream(), other.upstream()))
            .then_with(|| compare_part(self.revision(), other.revision()))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

/// The weight of one character in the non-digit runs: `~` before the end
/// of the string, the end before letters, letters before everything else.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// Policy's algorithm: alternate non-digit runs (compared character by
/// character with [`weight`]) and digit runs (compared as numbers, leading
/// zeros ignored, arbitrarily long).
fn compare_part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // Non-digit prefix.
        loop {
            let ca = a.get(i).copied().filter(|c| !c.is_ascii_digit());
            let cb = b.get(j).copied().filter(|c| !c.is_ascii_digit());
            if ca.is_none() && cb.is_none() {
                break;
            }
            let (wa, wb) = (weight(ca), weight(cb));
            if wa != wb {
                return wa.cmp(&wb);
            }
            if ca.is_some() {
                i += 1;
            }
            if cb.is_some() {
                j += 1;
            }
        }
        // Digit run, as a number of any length.
        let start_a = i;
        while a.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let start_b = j;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        let da = strip_zeros(&a[start_a..i]);
        let db = strip_zeros(&b[start_b..j]);
        let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

fn strip_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|&&c| c == b'0').count();
    &d[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn assert_lt(a: &str, b: &str) {
        assert!(v(a) < v(b), "{a} < {b}");
        assert!(v(b) > v(a), "{b} > {a}");
    }

    #[test]
    fn tilde_sorts_before_anything_even_the_end_of_the_string() {
        // Policy §5.6.12's own example: ~~ < ~~a < ~ < (empty) < a.
        for (a, b) in [
            ("1.0~~", "1.0~~a"),
            ("1.0~~a", "1.0~"),
            ("1.0~", "1.0"),
            ("1.0", "1.0a"),
        ] {
            assert_lt(a, b);
        }
        assert_lt("3.0.0~rc1-1", "3.0.0-1");
        assert_lt("1.0~rc1", "1.0");
    }

    #[test]
    fn an_epoch_outweighs_any_upstream_version() {
        assert_lt("9.9.9", "1:0.1");
        assert_lt("1:2.0", "2:1.0");
        assert_eq!(v("0:1.2-3"), v("1.2-3"));
        assert_eq!(v("1:1.2").epoch(), 1);
    }

    #[test]
    fn revisions_compare_after_upstream_and_a_missing_one_is_the_lowest() {
        assert_lt("1.2-1", "1.2-2");
        assert_lt("1.2-9", "1.2-10");
        assert_lt("1.2", "1.2-1");
        assert_lt("1.2-1", "1.2.1-1");
        assert_lt("2.36-9+deb12u13", "2.36-9+deb12u14");
        assert_lt("3.0.17-1~deb12u2", "3.0.17-1");
        assert_lt("3.0.17-1~deb12u2", "3.0.17-1~deb12u3");
        assert_eq!(v("1.2-3-4").upstream(), "1.2-3");
        assert_eq!(v("1.2-3-4").revision(), "4");
        assert_eq!(v("1.0"), v("1.0-0"));
    }

    #[test]
    fn digit_runs_compare_as_numbers_of_any_length() {
        assert_lt("1.9", "1.10");
        assert_lt("1.09", "1.10");
        assert_eq!(v("1.010"), v("1.10"));
        assert_lt("1.99999999999999999999999", "1.100000000000000000000000");
        assert_lt("0.5.11", "0.5.12");
    }

    #[test]
    fn letters_sort_before_other_characters_and_dpkg_test_cases_hold() {
        // From dpkg's t/dpkg_version.t.
        for (a, b) in [
            ("1.0", "1.0.0"),
            ("1.0a", "1.0+"),
            ("1.0+", "1.0."),
            ("1.0.0", "1.0.1"),
            ("2.7.4+reloaded2-13", "2.7.4+reloaded2-13ubuntu1"),
            ("1.2.3~rc1", "1.2.3"),
            ("0.9", "1.0"),
            ("1.0-a", "1.0-b"),
            ("20230311", "20230311+deb12u1"),
        ] {
            assert_lt(a, b);
        }
    }

    #[test]
    fn malformed_versions_are_refused_with_the_reason() {
        for bad in [
            "", "a1.0", "1.0 2", "x:1.0", ":1.0", "1.0-", "1.0-r_1", "1.0_x",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} accepted");
        }
        let e = Version::parse("a1.0").unwrap_err();
        assert!(e.to_string().contains("start with a digit"), "{e}");
    }
}
