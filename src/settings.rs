//! CLI flags + environment + `guildhall-image.toml` + defaults → validated
//! `Settings`. Reads config files; touches neither network nor layouts.

/// Invalid settings.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Placeholder.
    #[error("{0}")]
    Invalid(String),
}
