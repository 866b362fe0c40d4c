//! `credentials`: which registries have credentials in the OS keyring, and
//! which source would answer for a host. Never shows a secret.

use crate::error::Result;

use crate::cli::CredentialsArgs;
use crate::credentials::keyring::KeyringSource;
use crate::credentials::{ChainEnv, chain_for};
use crate::settings::Settings;

/// Run `credentials`.
pub async fn run(settings: &Settings, a: &CredentialsArgs) -> Result<()> {
    match &a.host {
        None => list(settings),
        Some(h) => explain(settings, h),
    }
}

fn list(settings: &Settings) -> Result<()> {
    let keyring = KeyringSource::from_env();
    let stored = keyring.list();
    if settings.json {
        super::print_json(&serde_json::json!({
            "stores": keyring.stores().iter().map(|s| s.name()).collect::<Vec<_>>(),
            "credentials": stored,
        }));
        return Ok(());
    }
    if stored.is_empty() {
        let stores: Vec<&str> = keyring.stores().iter().map(|s| s.name()).collect();
        let stores = if stores.is_empty() {
            "none: GUILDHALL_IMAGE_KEYRING=none".to_owned()
        } else {
            stores.join(", ")
        };
        crate::out!("No registry credentials stored in the OS keyring (stores: {stores}).");
        return Ok(());
    }
    let w = stored
        .iter()
        .map(|s| s.host.len())
        .max()
        .unwrap_or(0)
        .max("REGISTRY".len());
    let wu = stored
        .iter()
        .map(|s| s.username.as_deref().unwrap_or("?").len())
        .max()
        .unwrap_or(0)
        .max("USER".len());
    crate::out!("{:<w$}  {:<wu$}  STORE", "REGISTRY", "USER");
    for s in &stored {
        let note = s
            .unverified
            .as_deref()
            .map(|r| format!(" (not checked: {r})"))
            .unwrap_or_default();
        crate::out!(
            "{:<w$}  {:<wu$}  {}{note}",
            s.host,
            s.username.as_deref().unwrap_or("?"),
            s.store
        );
    }
    Ok(())
}

fn explain(settings: &Settings, host: &str) -> Result<()> {
    let (host, _) = super::login::resolve_registry(settings, host)?;
    // As for a push to this host: the env credentials, which apply to the
    // push target only, are in the chain.
    let chain = chain_for(Some(&host), None, ChainEnv::from_process());
    let answers = chain.explain(&host);
    let winner = answers.iter().find(|a| a.answer.is_some());
    if settings.json {
        super::print_json(&serde_json::json!({
            "registry": host,
            "answer": winner.map(|w| serde_json::json!({
                "source": w.answer,
                "username": w.username,
                "identity_token": w.identity_token,
            })),
            "sources": answers,
        }));
        return Ok(());
    }
    match winner {
        Some(w) => crate::out!(
            "{host}: credentials from {}, user {}{}",
            w.answer.as_deref().unwrap_or("?"),
            w.username.as_deref().unwrap_or("?"),
            if w.identity_token {
                " (identity token)"
            } else {
                ""
            }
        ),
        None => crate::out!("{host}: no credentials; requests go anonymously"),
    }
    let ws = answers.iter().map(|a| a.source.len()).max().unwrap_or(0);
    let mut answered = false;
    for a in &answers {
        let what = match (&a.answer, &a.error) {
            (_, Some(e)) => format!("error: {e}"),
            (Some(src), None) => {
                let shadowed = if answered {
                    " (not used: an earlier source answers)"
                } else {
                    ""
                };
                answered = true;
                format!(
                    "{src}, user {}{shadowed}",
                    a.username.as_deref().unwrap_or("?")
                )
            }
            (None, None) => "-".into(),
        };
        crate::out!("  {:<ws$}  {what}", a.source);
    }
    crate::out!(
        "  (as for a push to {host}; GUILDHALL_IMAGE_USERNAME/PASSWORD apply to the push target only)"
    );
    Ok(())
}
