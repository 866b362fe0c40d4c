//! `logout`: remove a registry's credentials from the OS keyring.

use crate::error::{Context as _, Result};

use crate::cli::LogoutArgs;
use crate::credentials::CredentialSource;
use crate::credentials::docker_config::DockerConfig;
use crate::credentials::keyring::KeyringSource;
use crate::settings::Settings;

/// Run `logout`. Nothing stored for the host is not an error: it says so.
pub async fn run(settings: &Settings, a: &LogoutArgs) -> Result<()> {
    let (host, _) = super::login::resolve_registry(settings, &a.registry)?;
    let removed = KeyringSource::from_env()
        .delete(&host)
        .with_context(|| format!("logout from {host}"))?;
    // Not ours to touch, but worth a word: the chain would still find them.
    let docker = DockerConfig::from_env();
    let docker_has = matches!(docker.get(&host), Ok(Some(_)));

    if settings.json {
        let stores: Vec<&str> = removed.iter().map(|s| s.name()).collect();
        super::print_json(&serde_json::json!({
            "registry": host,
            "removed": !removed.is_empty(),
            "stores": stores,
            "docker_config_has_credentials": docker_has,
        }));
    } else if !settings.quiet {
        if removed.is_empty() {
            crate::out!("Not logged in to {host}: no credentials stored in the OS keyring.");
        } else {
            let stores: Vec<&str> = removed.iter().map(|s| s.name()).collect();
            crate::out!(
                "Logged out of {host}: credentials removed from the OS keyring ({}).",
                stores.join(", ")
            );
        }
        if docker_has {
            crate::out!(
                "Note: the docker config {} still has credentials for {host} (not changed; use `docker logout {host}`).",
                docker.path().display()
            );
        }
    }
    Ok(())
}
