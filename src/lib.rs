//! guildhall-image as a library: everything the binary does, behind module
//! boundaries kept as if they were crates (see DESIGN.md).

pub mod auth;
pub mod build;
pub mod cli;
pub mod commands;
pub mod debian;
pub mod exit;
pub mod image;
pub mod layer;
pub mod layout;
pub mod preflight;
pub mod progress;
pub mod registry;
pub mod release;
pub mod settings;

/// The exit code for one error of the chain, when its type is known.
/// Each module's error type says which class it is in.
pub(crate) fn classify_known(e: &(dyn std::error::Error + 'static)) -> Option<exit::ExitCode> {
    use exit::{Classify, ExitCode};
    if let Some(e) = e.downcast_ref::<layout::LayoutError>() {
        return Some(match e {
            layout::LayoutError::Io { .. } => ExitCode::Failure,
            _ => ExitCode::Input,
        });
    }
    if let Some(e) = e.downcast_ref::<registry::RegistryError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = e.downcast_ref::<release::ReleaseError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = e.downcast_ref::<preflight::PreflightError>() {
        return Some(e.exit_code());
    }
    if e.is::<auth::AuthError>() {
        return Some(ExitCode::Auth);
    }
    if e.is::<image::reference::ReferenceError>() || e.is::<settings::SettingsError>() {
        return Some(ExitCode::Usage);
    }
    if let Some(e) = e.downcast_ref::<build::buildkit::BuildkitError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = e.downcast_ref::<build::import::ImportError>() {
        return Some(e.exit_code());
    }
    if e.is::<image::manifest::ManifestError>() {
        return Some(ExitCode::Input);
    }
    None
}
