//! What the checkout says about itself (git HEAD, remote, commit time), for
//! the image's source/revision labels and a reproducible creation time.

use std::path::Path;

/// Git facts about a project directory; empty outside a checkout.
#[derive(Clone, Debug, Default)]
pub struct Vcs {
    /// `git rev-parse HEAD`.
    pub revision: Option<String>,
    /// The `origin` remote as an https URL.
    pub source: Option<String>,
    /// HEAD's committer time (seconds since the epoch).
    pub commit_time: Option<i64>,
}

impl Vcs {
    /// Ask git about `dir` (no error when git or the checkout is absent).
    pub fn discover(dir: &Path) -> Vcs {
        let git = |args: &[&str]| -> Option<String> {
            let out = crate::process::command("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .output()
                .ok()?;
            if !out.status.success() {
                return None;
            }
            let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
            (!s.is_empty()).then_some(s)
        };
        Vcs {
            revision: git(&["rev-parse", "HEAD"]),
            source: git(&["remote", "get-url", "origin"]).map(|u| https_url(&u)),
            commit_time: git(&["log", "-1", "--format=%ct"]).and_then(|s| s.parse().ok()),
        }
    }
}

/// A remote URL as a browsable https URL, credentials stripped:
/// `git@host:org/repo.git` and `ssh://git@host/org/repo` → `https://host/org/repo`.
pub fn https_url(remote: &str) -> String {
    let r = remote.trim().trim_end_matches('/').trim_end_matches(".git");
    if let Some(rest) = r.strip_prefix("ssh://") {
        let rest = rest.split_once('@').map(|(_, h)| h).unwrap_or(rest);
        // ssh://host:port/path: drop the port, which is ssh's.
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = host.split(':').next().unwrap_or(host);
        format!("https://{host}/{path}")
    } else if let Some(rest) = r
        .strip_prefix("https://")
        .or_else(|| r.strip_prefix("http://"))
    {
        let rest = rest
            .split_once('@')
            .filter(|(u, _)| !u.contains('/'))
            .map(|(_, h)| h)
            .unwrap_or(rest);
        format!("https://{rest}")
    } else if let Some((user_host, path)) = r.split_once(':') {
        let host = user_host
            .split_once('@')
            .map(|(_, h)| h)
            .unwrap_or(user_host);
        format!("https://{host}/{path}")
    } else {
        r.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_become_https_urls_without_credentials() {
        assert_eq!(
            https_url("git@git.guildhouse.dev:tking/guildhall.git"),
            "https://git.guildhouse.dev/tking/guildhall"
        );
        assert_eq!(
            https_url("ssh://git@git.guildhouse.dev:2222/tking/guildhall.git"),
            "https://git.guildhouse.dev/tking/guildhall"
        );
        assert_eq!(
            https_url("https://user:tok@git.guildhouse.dev/tking/guildhall"),
            "https://git.guildhouse.dev/tking/guildhall"
        );
    }
}
