//! `login`: ask for (or read) a registry's credentials, check them against
//! the registry, then keep them in the OS keyring for later pushes.

use std::io::{BufRead, IsTerminal, Read};
use std::sync::Arc;

use crate::error::{Context as _, Error, Result};

use crate::cli::LoginArgs;
use crate::credentials::keyring::KeyringSource;
use crate::credentials::{Chain, ForHost, Secret};
use crate::image::reference::normalize_registry_host;
use crate::registry::{Client, ClientOptions};
use crate::settings::Settings;

/// Run `login`.
pub async fn run(settings: &Settings, a: &LoginArgs) -> Result<()> {
    let (host, repository) = resolve_registry(settings, &a.registry)?;
    let username = username(a, &host)?;
    let secret = password(a, &username, &host)?;

    if a.no_verify {
        tracing::debug!(host, "--no-verify: credentials not checked");
    } else {
        verify(settings, &host, repository.as_deref(), &username, &secret)
            .await
            .with_context(|| format!("login to {host} as {username} failed; nothing was stored"))?;
    }

    let keyring = KeyringSource::from_env();
    let store = keyring
        .store(&host, &username, &secret)
        .with_context(|| format!("login to {host}: the credentials were not stored"))?;

    if settings.json {
        super::print_json(&serde_json::json!({
            "registry": host,
            "username": username,
            "store": store.name(),
            "verified": !a.no_verify,
        }));
    } else if !settings.quiet {
        let checked = if a.no_verify {
            " (not checked: --no-verify)"
        } else {
            ""
        };
        crate::out!(
            "Logged in to {host} as {username}{checked}; credentials stored in the OS keyring ({store})."
        );
    }
    Ok(())
}

/// The registry host a `login`/`logout` argument names, and a repository to
/// ask a token for when one is known: a target name (`forgejo`, `ghcr`, one
/// from the config) gives both; a host (or `https://host/…`) gives the host,
/// plus the repository of a target on that host, if any.
pub fn resolve_registry(settings: &Settings, arg: &str) -> Result<(String, Option<String>)> {
    let arg = arg.trim();
    let looks_like_name = !arg.is_empty() && !arg.contains(['.', ':', '/']) && arg != "localhost";
    if looks_like_name {
        let t = settings.target(Some(arg))?;
        return Ok((
            t.repository.registry.clone(),
            Some(t.repository.repository.clone()),
        ));
    }
    let host = arg
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    if host.is_empty() || host.contains(['@', ' ']) {
        return Err(Error::usage(format!(
            "`{arg}` is not a registry host (HOST[:PORT], e.g. git.guildhouse.dev) or a target name"
        )));
    }
    let host = normalize_registry_host(host);
    let mut names: Vec<String> = vec!["forgejo".into(), "ghcr".into()];
    names.extend(settings.file.targets.keys().cloned());
    let repository = names
        .iter()
        .filter_map(|n| settings.target(Some(n)).ok())
        .find(|t| t.repository.registry == host)
        .map(|t| t.repository.repository);
    Ok((host, repository))
}

fn username(a: &LoginArgs, host: &str) -> Result<String> {
    if let Some(u) = &a.username {
        if u.trim().is_empty() {
            return Err(Error::usage("-u/--username is empty"));
        }
        return Ok(u.trim().to_owned());
    }
    if a.password_stdin {
        return Err(Error::usage(
            "--password-stdin needs -u USER: standard input carries the password",
        ));
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::usage(
            "no user name: give -u USER (standard input is not a terminal to ask on)",
        ));
    }
    eprint!("Username for {host}: ");
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the user name")?;
    let u = line.trim();
    if u.is_empty() {
        return Err(Error::usage("no user name given"));
    }
    Ok(u.to_owned())
}

fn password(a: &LoginArgs, username: &str, host: &str) -> Result<Secret> {
    let raw = if a.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from standard input")?;
        Secret::new(s)
    } else {
        if !std::io::stdin().is_terminal() {
            return Err(Error::usage(
                "no terminal to ask for the password on: pipe it in with --password-stdin",
            ));
        }
        Secret::new(
            rpassword::prompt_password(format!("Password or token for {username}@{host}: "))
                .context("reading the password from the terminal")?,
        )
    };
    let trimmed = raw.expose().trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        return Err(Error::usage("the password is empty"));
    }
    Ok(Secret::new(trimmed))
}

/// Ask the registry: `GET /v2/` and, for a Bearer challenge, a token from
/// its token service, with exactly these credentials.
async fn verify(
    settings: &Settings,
    host: &str,
    repository: Option<&str>,
    username: &str,
    secret: &Secret,
) -> Result<()> {
    let chain = Chain::new().with(ForHost::new(
        host,
        username.to_owned(),
        secret.clone(),
        "login",
    ));
    let opts = ClientOptions {
        insecure_hosts: settings.insecure_registries.clone(),
        connect_timeout: settings.connect_timeout,
        max_attempts: 2,
        ..ClientOptions::default()
    };
    let client = Client::new(Arc::new(chain), opts)?;
    client.check_credentials(host, repository).await?;
    tracing::debug!(host, repository, "credentials accepted by the registry");
    Ok(())
}
