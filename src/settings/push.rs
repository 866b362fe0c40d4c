//! `push`'s settings: the target with its chunk size, concurrency and timeouts, the tags, the layout.

#[allow(unused_imports)]
use super::*;

/// Validated settings of `push`.
#[derive(Debug)]
pub struct PushSettings {
    /// Tags.
    pub tags: Vec<String>,
    /// Target.
    pub target: Target,
    /// Layout.
    pub layout: PathBuf,
    /// Digest file.
    pub digest_file: Option<PathBuf>,
}

impl Settings {
    /// Validate `push`'s flags.
    pub fn push(&self, a: &PushArgs) -> Result<PushSettings, SettingsError> {
        for t in &a.tags {
            validate_tag(t)?;
        }
        let mut target = self.target(a.to.as_deref())?;
        if let Some(c) = &a.chunk_size {
            target.chunk_size = parse_chunk_size(c).map_err(|r| invalid("--chunk-size", r))?;
        }
        if let Some(t) = &a.idle_timeout {
            target.idle_timeout = parse_duration(t).map_err(|r| invalid("--idle-timeout", r))?;
        }
        if let Some(t) = &a.response_timeout {
            target.response_timeout =
                parse_duration(t).map_err(|r| invalid("--response-timeout", r))?;
        }
        if let Some(n) = a.concurrency {
            if n == 0 {
                return Err(invalid("--concurrency", "must be at least 1"));
            }
            target.concurrency = n;
        }
        Ok(PushSettings {
            tags: a.tags.clone(),
            target,
            layout: a
                .layout
                .clone()
                .or_else(|| self.file.build.layout.clone())
                .unwrap_or_else(|| PathBuf::from("_build/image")),
            digest_file: a.digest_file.clone(),
        })
    }
}
