//! The engines: each builds an image into the OCI layout and says what it
//! made. `direct` assembles a mix release onto a base without Docker;
//! `buildkit` drives the Dockerfile through BuildKit and imports the
//! result. Both are behind [`Engine`]; `commands/build` does not care which.

pub mod base;
pub mod buildkit;
pub mod direct;
mod packages;

use std::path::Path;

use crate::error::Result;
use crate::image::Digest;
use crate::layout::Layout;
use crate::progress::Progress;
use crate::registry::Client;
use crate::settings::BuildSettings;

/// What an engine is given.
pub struct BuildJob<'a> {
    /// The validated `build` settings (engine options included).
    pub build: &'a BuildSettings,
    /// The layout the image goes into.
    pub layout: &'a Layout,
    /// The tool's cache directory (bases, memo).
    pub cache_dir: &'a Path,
    /// A client to pull base images with; `None` with `--offline`.
    pub pull_client: Option<&'a Client>,
    /// Progress display.
    pub progress: &'a Progress,
}

/// A way to build the image.
pub trait Engine {
    /// `direct`, `buildkit`.
    fn name(&self) -> &'static str;
    /// Build into the job's layout and tag the result (the given tags, else
    /// the release's version). Tags move only once every blob is stored.
    #[allow(async_fn_in_trait)] // used with static dispatch only
    async fn build(&self, job: &BuildJob<'_>) -> Result<BuildOutcome>;
}

/// A layer of the built image, and whether it was made or reused.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerOutcome {
    /// `base`, `erts`, `deps`, `assets`, `app`.
    pub name: String,
    /// What it holds.
    pub description: String,
    /// The compressed blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// sha256 of the uncompressed tar (release layers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Digest>,
    /// Whether the blob was already in the layout.
    pub reused: bool,
}

/// What a build produced.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BuildOutcome {
    /// The manifest digest.
    pub digest: Digest,
    /// The manifest size.
    pub size: u64,
    /// The config digest.
    pub config: Digest,
    /// The image's platform.
    pub platform: String,
    /// Tags set in the layout.
    pub tags: Vec<String>,
    /// The layout directory.
    pub layout: String,
    /// Release name and version.
    pub release: String,
    /// Layers, base first.
    pub layers: Vec<LayerOutcome>,
}
