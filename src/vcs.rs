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
        let source = git(&["remote", "get-url", "origin"]).and_then(|u| {
            let url = https_url(&u);
            if url.is_none() {
                // A host path is no link to the repository, and a leak.
                tracing::debug!(
                    "org.opencontainers.image.source left out: the origin remote is a local path, not a URL (set it with --source or [image] source)"
                );
            }
            url
        });
        Vcs {
            revision: git(&["rev-parse", "HEAD"]),
            source,
            commit_time: git(&["log", "-1", "--format=%ct"]).and_then(|s| s.parse().ok()),
        }
    }
}

/// A remote URL as a browsable https URL, credentials stripped:
/// `git@host:org/repo.git` and `ssh://git@host/org/repo` → `https://host/org/repo`.
/// `None` for a remote that is no URL (a local path, `file://`): a label
/// holding a host path would link nowhere and tell the world the path.
pub fn https_url(remote: &str) -> Option<String> {
    let r = remote.trim().trim_end_matches('/').trim_end_matches(".git");
    if let Some(rest) = r
        .strip_prefix("ssh://")
        .or_else(|| r.strip_prefix("git+ssh://"))
        .or_else(|| r.strip_prefix("git://"))
    {
        let rest = rest.split_once('@').map(|(_, h)| h).unwrap_or(rest);
        // ssh://host:port/path: drop the port, which is ssh's.
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = host.split(':').next().unwrap_or(host);
        url_of(host, path)
    } else if let Some(rest) = r
        .strip_prefix("https://")
        .or_else(|| r.strip_prefix("http://"))
    {
        let rest = rest
            .split_once('@')
            .filter(|(u, _)| !u.contains('/'))
            .map(|(_, h)| h)
            .unwrap_or(rest);
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        url_of(host, path)
    } else if r.contains("://") {
        None // file://, and schemes that name no web host
    } else if let Some((user_host, path)) = r.split_once(':') {
        // scp-like `[user@]host:path`; a `/` before the `:` makes it a path.
        if user_host.contains('/') {
            return None;
        }
        let host = user_host
            .split_once('@')
            .map(|(_, h)| h)
            .unwrap_or(user_host);
        url_of(host, path)
    } else {
        None
    }
}

fn url_of(host: &str, path: &str) -> Option<String> {
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    host_ok.then(|| format!("https://{host}/{}", path.trim_start_matches('/')))
}

/// Whether a `--source` / `[image] source` value is an http(s) URL.
pub fn is_web_url(s: &str) -> bool {
    s.strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .is_some_and(|rest| {
            let host = rest.split('/').next().unwrap_or("");
            !host.is_empty() && !host.contains('@')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_become_https_urls_without_credentials() {
        for remote in [
            "git@git.guildhouse.dev:tking/guildhall.git",
            "ssh://git@git.guildhouse.dev:2222/tking/guildhall.git",
            "https://user:tok@git.guildhouse.dev/tking/guildhall",
            "https://git.guildhouse.dev/tking/guildhall.git/",
        ] {
            assert_eq!(
                https_url(remote).as_deref(),
                Some("https://git.guildhouse.dev/tking/guildhall"),
                "{remote}"
            );
        }
    }

    #[test]
    fn local_path_remotes_give_no_url() {
        for remote in [
            "/srv/git/guildhall.git",
            "../guildhall",
            "./x",
            "file:///srv/git/guildhall",
            "/home/me/code:weird/guildhall",
        ] {
            assert_eq!(https_url(remote), None, "{remote}");
        }
        assert!(is_web_url("https://git.guildhouse.dev/tking/guildhall"));
        assert!(!is_web_url("/srv/git/guildhall") && !is_web_url("https://u:p@h/x"));
    }
}
