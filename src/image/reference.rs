//! Image references: a repository in a registry (`host[:port]/repo:tag`,
//! `@sha256:…`, Docker Hub short names) or an OCI layout (`oci:DIR[:TAG]`).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::image::Digest;

/// Where an image is: a registry, or an OCI image layout on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// `host/repo:tag` or `host/repo@sha256:…`.
    Registry(RegistryRef),
    /// `oci:DIR[:TAG]`.
    Layout(LayoutRef),
}

/// `oci:DIR[:TAG]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutRef {
    /// The layout directory.
    pub dir: PathBuf,
    /// The tag (`org.opencontainers.image.ref.name`); `None` means the only image.
    pub tag: Option<String>,
}

/// A fully qualified registry reference. The registry is normalised
/// (`docker.io` for Docker Hub and its aliases), the repository carries
/// `library/` for official Docker Hub images.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RegistryRef {
    /// `host[:port]`, lower-case.
    pub registry: String,
    /// `org/name`.
    pub repository: String,
    /// Tag, if any.
    pub tag: Option<String>,
    /// Digest, if any (takes precedence over the tag when fetching).
    pub digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// Not a valid registry reference.
    #[error("`{input}` is not a valid image reference: {reason}")]
    Invalid {
        /// What was given.
        input: String,
        /// Why.
        reason: String,
    },
    /// The reference carries user info (`user:password@host/…`). The input
    /// is not kept: it holds a secret.
    #[error(
        "an image reference must not contain credentials (`USER:PASSWORD@` before the registry); \
         run `guildhall-image login HOST` or set GUILDHALL_IMAGE_USERNAME/GUILDHALL_IMAGE_PASSWORD instead"
    )]
    Credentials,
}

/// Whether `s` looks like `[scheme://]user[:password]@host/…`: an `@`
/// before the first `/` that does not start a digest (`name@sha256:…`).
pub fn has_userinfo(s: &str) -> bool {
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let first = s.split('/').next().unwrap_or(s);
    match first.split_once('@') {
        Some((_, after)) => {
            // `debian@sha256:…` (a Docker Hub short name with a digest) is fine.
            let digest_like = after.split_once(':').is_some_and(|(algo, hex)| {
                !algo.is_empty()
                    && algo
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c))
                    && !hex.is_empty()
                    && hex.chars().all(|c| c.is_ascii_hexdigit())
            });
            !digest_like || s.contains('/')
        }
        None => false,
    }
}

const DOCKER_HUB: &str = "docker.io";

/// The one name for Docker Hub and its aliases; other hosts lower-cased.
pub fn normalize_registry_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        _ => host,
    }
}

/// Whether `host[:port]` is a loopback address (spoken to over plain HTTP).
pub fn is_loopback_host(registry: &str) -> bool {
    let host = host_without_port(registry);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// `host` of `host[:port]` (IPv6 literals in brackets kept whole).
pub fn host_without_port(registry: &str) -> &str {
    if registry.starts_with('[') {
        match registry.find(']') {
            Some(end) => &registry[..=end],
            None => registry,
        }
    } else {
        registry
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(registry)
    }
}

/// The host to send a registry's API requests to: Docker Hub's API lives on
/// `registry-1.docker.io`, every other registry on its own host.
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        "registry-1.docker.io"
    } else {
        registry
    }
}

impl RegistryRef {
    /// Whether the registry is on a loopback address.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.registry)
    }

    /// The tag or digest to fetch: the digest when there is one.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// This repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> RegistryRef {
        RegistryRef {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        }
    }

    /// This repository pinned to a digest (the tag kept for display).
    pub fn with_digest(&self, digest: Digest) -> RegistryRef {
        RegistryRef {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// `host/repo` without tag or digest.
    pub fn repo_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// Parse `HOST[:PORT]/REPO` (no tag, no digest): a push target.
    pub fn parse_repository(s: &str) -> Result<RegistryRef, ReferenceError> {
        let r: RegistryRef = s.parse()?;
        // `tag` is `latest` when none was written (see `from_str`).
        if has_explicit_tag(s) || r.digest.is_some() {
            return Err(ReferenceError::Invalid {
                input: s.into(),
                reason: "a repository takes no tag or digest here".into(),
            });
        }
        Ok(RegistryRef { tag: None, ..r })
    }
}

impl FromStr for RegistryRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if has_userinfo(s) {
            return Err(ReferenceError::Credentials);
        }
        let parsed: oci_spec::distribution::Reference = s.parse().map_err(
            |e: oci_spec::distribution::ParseError| ReferenceError::Invalid {
                input: s.into(),
                reason: e.to_string(),
            },
        )?;
        let digest = match parsed.digest() {
            Some(d) => Some(d.parse::<Digest>().map_err(|e| ReferenceError::Invalid {
                input: s.into(),
                reason: e.to_string(),
            })?),
            None => None,
        };
        // oci-spec fills in `latest` when neither tag nor digest is given;
        // keep that only when there is no digest.
        let tag = parsed.tag().map(str::to_owned);
        let tag = if digest.is_some() && !s.contains(':') {
            None
        } else {
            tag
        };
        let tag = if digest.is_some() && tag.as_deref() == Some("latest") && !has_explicit_tag(s) {
            None
        } else {
            tag
        };
        Ok(RegistryRef {
            registry: normalize_registry_host(parsed.registry()),
            repository: parsed.repository().to_owned(),
            tag,
            digest,
        })
    }
}

fn has_explicit_tag(s: &str) -> bool {
    let before_digest = s.split('@').next().unwrap_or(s);
    let last = before_digest.rsplit('/').next().unwrap_or(before_digest);
    last.contains(':')
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("oci:") {
            if rest.is_empty() {
                return Err(ReferenceError::Invalid {
                    input: s.into(),
                    reason: "oci: needs a directory (oci:DIR[:TAG])".into(),
                });
            }
            // The tag is after the last ':' unless that ':' is part of the path.
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((d, t)) if !d.is_empty() && !t.is_empty() && !t.contains('/') => {
                    (d, Some(t.to_owned()))
                }
                _ => (rest, None),
            };
            return Ok(ImageRef::Layout(LayoutRef {
                dir: PathBuf::from(dir),
                tag,
            }));
        }
        Ok(ImageRef::Registry(s.parse()?))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Registry(r) => r.fmt(f),
            ImageRef::Layout(l) => {
                write!(f, "oci:{}", l.dir.display())?;
                if let Some(t) = &l.tag {
                    write!(f, ":{t}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RegistryRef {
        s.parse().unwrap()
    }

    #[test]
    fn docker_hub_short_names_are_qualified() {
        let x = r("debian:bookworm-slim");
        assert_eq!(x.registry, "docker.io");
        assert_eq!(x.repository, "library/debian");
        assert_eq!(x.tag.as_deref(), Some("bookworm-slim"));
        assert_eq!(api_host(&x.registry), "registry-1.docker.io");
        assert_eq!(r("index.docker.io/library/debian:12").registry, "docker.io");
    }

    #[test]
    fn hosts_with_ports_and_digests_parse() {
        let d = format!("sha256:{}", "a".repeat(64));
        let x = r(&format!("127.0.0.1:5000/base/runner@{d}"));
        assert_eq!(x.registry, "127.0.0.1:5000");
        assert_eq!(x.repository, "base/runner");
        assert_eq!(x.tag, None);
        assert_eq!(x.digest.unwrap().to_string(), d);
        assert!(r("localhost:5000/x:1").is_loopback());
        assert!(is_loopback_host("[::1]:5000"));
        assert!(is_loopback_host("127.0.0.2"));
        assert!(!r("git.guildhouse.dev/tking/guildhall:1").is_loopback());
    }

    #[test]
    fn a_tag_without_digest_defaults_to_latest() {
        assert_eq!(r("ghcr.io/gh-tking/guildhall").reference(), "latest");
    }

    #[test]
    fn layout_references_split_dir_and_tag() {
        let x: ImageRef = "oci:_build/image:v0.1.0".parse().unwrap();
        assert_eq!(
            x,
            ImageRef::Layout(LayoutRef {
                dir: "_build/image".into(),
                tag: Some("v0.1.0".into())
            })
        );
        let y: ImageRef = "oci:/tmp/x".parse().unwrap();
        assert_eq!(
            y,
            ImageRef::Layout(LayoutRef {
                dir: "/tmp/x".into(),
                tag: None
            })
        );
    }

    #[test]
    fn credentials_in_a_reference_are_refused_without_being_repeated() {
        for s in [
            "bob:Secret@host.example/repo",
            "bob:Secret@127.0.0.1:5000/repo:tag",
            "https://bob:Secret@host.example/repo",
            "bob@host.example/repo",
            "bob:Secret@debian",
        ] {
            let e = s.parse::<RegistryRef>().unwrap_err();
            assert!(matches!(e, ReferenceError::Credentials), "{s}: {e}");
            assert!(!e.to_string().contains("Secret"), "{e}");
            let e = s.parse::<ImageRef>().unwrap_err().to_string();
            assert!(!e.contains("Secret"), "{e}");
        }
        let d = format!("debian@sha256:{}", "a".repeat(64));
        assert!(r(&d).digest.is_some());
        let d = format!("host.example/x/y@sha256:{}", "a".repeat(64));
        assert!(r(&d).digest.is_some());
    }

    #[test]
    fn garbage_is_rejected_with_the_input_named() {
        let e = "Not A Ref!!".parse::<RegistryRef>().unwrap_err();
        assert!(e.to_string().contains("Not A Ref!!"));
    }
}
