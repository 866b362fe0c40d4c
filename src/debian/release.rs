//! A suite's signed `InRelease`: verified against a [`Keyring`], checked
//! against the time the build was given (`Date`, `Valid-Until`), and read
//! for the sha256 and size of every index it lists.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::deb822;
use super::error::DebianError;
use super::fetch::Sha256;
use super::keyring::{GoodSignature, Keyring};

/// How far in the future a `Date` may be before it is refused: clocks of
/// mirrors and builders drift a little.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(10 * 60);

/// An index file the `InRelease` vouches for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexFile {
    /// Its sha256.
    pub sha256: Sha256,
    /// Its size.
    pub size: u64,
}

/// A verified `InRelease`.
#[derive(Clone, Debug)]
pub struct Release {
    /// Its URL (for messages).
    pub url: String,
    /// `Suite` (`oldstable`, `stable-security`).
    pub suite: String,
    /// `Codename` (`bookworm`, `bookworm-security`).
    pub codename: String,
    /// `Date`, seconds since the epoch.
    pub date: u64,
    /// `Date` as written.
    pub date_text: String,
    /// `Valid-Until`, if the archive sets one (the security archive does).
    pub valid_until: Option<u64>,
    /// `Acquire-By-Hash: yes`: indexes are also at `by-hash/SHA256/HEX`.
    pub by_hash: bool,
    /// Every file of the `SHA256` field: path (`main/binary-amd64/Packages.xz`) → hash and size.
    pub files: BTreeMap<String, IndexFile>,
    /// The good signatures found.
    pub signatures: Vec<GoodSignature>,
}

impl Release {
    /// Verify and read an `InRelease` fetched from `url` for the suite
    /// `expected` (matched against `Codename` or `Suite`, so that a mirror
    /// cannot pass one suite off as another), at time `now`.
    pub fn verify(
        bytes: &[u8],
        url: &str,
        expected: &str,
        keyring: &Keyring,
        now: SystemTime,
    ) -> Result<Release, DebianError> {
        let (signed, signatures) = keyring.verify_clearsigned(bytes, url, now)?;
        let bad = |reason: String| DebianError::Release {
            url: url.to_owned(),
            reason,
        };
        let p = deb822::parse_one(&signed).map_err(|e| bad(format!("signed text: {e}")))?;
        let codename = p.get("Codename").unwrap_or_default().to_owned();
        let suite = p.get("Suite").unwrap_or_default().to_owned();
        if codename != expected && suite != expected {
            return Err(bad(format!(
                "it is the Release of {codename:?} (suite {suite:?}), not of {expected:?}"
            )));
        }
        let date_text = p
            .get("Date")
            .ok_or_else(|| bad("no Date field".into()))?
            .to_owned();
        let date = parse_date(&date_text)
            .ok_or_else(|| bad(format!("Date {date_text:?} is not an RFC 2822 date")))?;
        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if date > now_secs + MAX_CLOCK_SKEW.as_secs() {
            return Err(DebianError::NotYetValid {
                url: url.to_owned(),
                date: date_text,
                now: format_date(now_secs),
            });
        }
        let valid_until = match p.get("Valid-Until") {
            None => None,
            Some(v) => {
                let t = parse_date(v)
                    .ok_or_else(|| bad(format!("Valid-Until {v:?} is not an RFC 2822 date")))?;
                if t <= now_secs {
                    return Err(DebianError::Expired {
                        url: url.to_owned(),
                        valid_until: v.to_owned(),
                        now: format_date(now_secs),
                    });
                }
                Some(t)
            }
        };
        let by_hash = p
            .get("Acquire-By-Hash")
            .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
        let mut files = BTreeMap::new();
        for line in p.get("SHA256").unwrap_or_default().lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.is_empty() {
                continue;
            }
            let [hash, size, path] = f.as_slice() else {
                return Err(bad(format!("SHA256 line {line:?} is not `hash size path`")));
            };
            let sha256 = Sha256::from_hex(hash)
                .ok_or_else(|| bad(format!("SHA256 line {line:?}: not a sha256")))?;
            let size = size
                .parse()
                .map_err(|_| bad(format!("SHA256 line {line:?}: not a size")))?;
            files.insert((*path).to_owned(), IndexFile { sha256, size });
        }
        if files.is_empty() {
            return Err(bad(
                "no SHA256 field: nothing it lists can be verified".into()
            ));
        }
        Ok(Release {
            url: url.to_owned(),
            suite,
            codename,
            date,
            date_text,
            valid_until,
            by_hash,
            files,
            signatures,
        })
    }

    /// The entry for `path`, if listed.
    pub fn file(&self, path: &str) -> Option<&IndexFile> {
        self.files.get(path)
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// An RFC 2822 date as `Release` files write it (`Sat, 11 Jul 2026
/// 10:16:37 UTC`; `GMT`, `Z` and numeric offsets too) → seconds since the
/// epoch.
pub fn parse_date(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = match s.split_once(',') {
        Some((_, rest)) => rest.trim(),
        None => s,
    };
    let parts: Vec<&str> = s.split_whitespace().collect();
    let (day, month, year, time, zone) = match parts.as_slice() {
        [d, m, y, t, z] => (*d, *m, *y, *t, *z),
        [d, m, y, t] => (*d, *m, *y, *t, "UTC"),
        _ => return None,
    };
    let day: u32 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as u32 + 1;
    let year: i64 = year.parse().ok().filter(|&y| y >= 1970)?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (h, mi, se) = match hms.as_slice() {
        [h, m, s] => (*h, *m, *s),
        [h, m] => (*h, *m, 0),
        _ => return None,
    };
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let offset: i64 = match zone {
        "UTC" | "GMT" | "Z" | "UT" => 0,
        z if (z.starts_with('+') || z.starts_with('-')) && z.len() == 5 => {
            let n: i64 = z[1..].parse().ok()?;
            let secs = (n / 100) * 3600 + (n % 100) * 60;
            if z.starts_with('-') { -secs } else { secs }
        }
        _ => return None,
    };
    let t = days_from_civil(year, month, day) * 86_400 + (h * 3600 + mi * 60 + se) as i64 - offset;
    u64::try_from(t).ok()
}

/// Seconds since the epoch as `Release` files write dates.
pub fn format_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} UTC",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// `YYYYMMDDTHHMMSSZ`, the form snapshot.debian.org's URLs take.
pub fn snapshot_stamp(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_dates_parse_and_format_back() {
        let t = parse_date("Sat, 11 Jul 2026 10:16:37 UTC").unwrap();
        assert_eq!(t, 1_783_764_997);
        assert_eq!(format_date(t), "Sat, 11 Jul 2026 10:16:37 UTC");
        assert_eq!(snapshot_stamp(t), "20260711T101637Z");
        assert_eq!(
            parse_date("Mon, 30 Nov 2026 00:22:33 +0100"),
            parse_date("Sun, 29 Nov 2026 23:22:33 UTC")
        );
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(format_date(0), "Thu, 01 Jan 1970 00:00:00 UTC");
        for bad in [
            "",
            "yesterday",
            "Sat, 32 Jul 2026 10:16:37 UTC",
            "Sat, 11 Foo 2026 10:16:37 UTC",
            "Sat, 11 Jul 2026 25:00:00 UTC",
            "Sat, 11 Jul 2026 10:16:37 CEST",
        ] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
    }
}
