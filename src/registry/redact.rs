//! URLs made safe to print: no user info, and query values that can carry secrets (upload state, pre-signed storage URLs) replaced.

#[allow(unused_imports)]
use super::*;

/// A URL made safe to print: no user info, and query values other than a
/// few harmless ones (`digest`, `mount`, `from`, `service`, `scope`, `n`,
/// `last`) replaced by `<redacted>` — upload state and pre-signed storage URLs
/// carry secrets there.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub(super) String);

impl Redacted {
    /// Redact a URL.
    pub fn new(url: &Url) -> Redacted {
        let mut u = url.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        if u.query().is_some() {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let keep = matches!(
                        k.as_ref(),
                        "digest" | "mount" | "from" | "service" | "scope" | "n" | "last"
                    );
                    let v = if keep {
                        v.into_owned()
                    } else {
                        "<redacted>".into()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            u.set_query(None);
            if !pairs.is_empty() {
                let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                return Redacted(format!("{u}?{}", q.join("&")));
            }
        }
        Redacted(u.to_string())
    }

    /// The redacted text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
