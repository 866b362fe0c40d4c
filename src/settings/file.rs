//! `guildhall-image.toml`: its sections as read (unknown keys refused), before flags and defaults are applied.

#[allow(unused_imports)]
use super::*;

/// `guildhall-image.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[build]`.
    #[serde(default)]
    pub build: BuildSection,
    /// `[image]`.
    #[serde(default)]
    pub image: ImageSection,
    /// `[debian]`.
    #[serde(default)]
    pub debian: DebianSection,
    /// Default push target name.
    pub default_target: Option<String>,
    /// `[targets.NAME]`.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetSection>,
    /// Registries spoken to over plain HTTP.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
}

/// `[build]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSection {
    /// Engine.
    pub engine: Option<Engine>,
    /// Base image reference.
    pub base: Option<String>,
    /// Release path.
    pub release: Option<PathBuf>,
    /// Run `mix release` first.
    pub mix: Option<bool>,
    /// Layout directory.
    pub layout: Option<PathBuf>,
    /// Applications that belong in the app layer besides the release's own (umbrellas).
    #[serde(default)]
    pub own_apps: Vec<String>,
    /// Static assets at least this big get a layer of their own (bytes or "1MiB").
    pub assets_layer_min: Option<String>,
    /// Most a release tarball may unpack to (bytes or "8GiB").
    pub max_release_size: Option<String>,
    /// Debian packages added between the base and the release
    /// (`NAME` or `NAME=VERSION`).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Layer compression: "gzip", "gzip:LEVEL", "zstd" or "zstd:LEVEL".
    pub compression: Option<String>,
}

/// `[debian]`: where Debian packages come from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSection {
    /// The mirror (`http://deb.debian.org/debian`).
    pub mirror: Option<String>,
    /// The security mirror (`http://deb.debian.org/debian-security`).
    pub security_mirror: Option<String>,
    /// A keyring file InRelease must be signed with (instead of the built-in keys).
    pub keyring: Option<PathBuf>,
}

/// `[image]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extra labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Ports.
    pub ports: Option<Vec<String>>,
    /// User.
    pub user: Option<String>,
    /// Command.
    pub cmd: Option<Vec<String>>,
    /// Source URL label.
    pub source: Option<String>,
}

/// `[targets.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    /// `HOST[:PORT]/REPO`.
    pub repository: Option<String>,
    /// Chunk size (bytes, or "64MiB").
    pub chunk_size: Option<String>,
    /// Parallel uploads.
    pub concurrency: Option<usize>,
    /// Plain HTTP.
    pub insecure: Option<bool>,
    /// Idle bound while sending ("30s").
    pub idle_timeout: Option<String>,
    /// Bound for the answer to a fully sent request ("150s").
    pub response_timeout: Option<String>,
}
