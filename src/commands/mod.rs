//! One module per subcommand: orchestration only. Each turns validated
//! settings into calls on the library and prints the result (text, or JSON
//! with `--json`) on stdout; progress and logs go to stderr.

pub mod build;
pub mod credentials;
pub mod gc;
pub mod inspect;
pub mod login;
pub mod logout;
pub mod output;
pub mod push;

use std::io::Read;
use std::sync::Arc;

use crate::error::{Context as _, Error, Result};

use crate::cli::{Cli, Command, CredentialArgs};
use crate::credentials::{Chain, ChainEnv, Credential, CredentialKind, Secret, chain_for};
use crate::progress::Progress;
use crate::registry::{Client, ClientOptions};
use crate::settings::{Settings, Target};

/// Run the command the user asked for.
pub async fn run(cli: Cli) -> Result<()> {
    let settings = Settings::load(&cli)?;
    match &cli.command {
        Command::Build(a) => build::run(&settings, a).await,
        Command::Push(a) => push::run(&settings, a).await,
        Command::Inspect(a) => inspect::run(&settings, a).await,
        Command::Gc(a) => gc::run(&settings, a),
        Command::Login(a) => login::run(&settings, a).await,
        Command::Logout(a) => logout::run(&settings, a).await,
        Command::Credentials(a) => credentials::run(&settings, a).await,
    }
}

/// The progress display for a command.
pub fn progress(settings: &Settings) -> Progress {
    Progress::detect(settings.quiet)
}

/// The credential chain for a command: explicit flags and env answer only
/// for `push_host` (the push target); then the OS keyring and the docker
/// config (see [`crate::credentials::chain_for`]).
pub fn credentials(creds: &CredentialArgs, push_host: Option<&str>) -> Result<Chain> {
    let explicit = match (&creds.username, creds.password_stdin) {
        (Some(user), true) => Some(Credential {
            username: user.clone(),
            secret: read_secret_stdin()?,
            kind: CredentialKind::Password,
            source: "flags".into(),
        }),
        (None, true) => return Err(Error::usage("--password-stdin needs --username")),
        (Some(_), false) => {
            return Err(Error::usage(
                "--username needs --password-stdin (passwords are never taken as arguments)",
            ));
        }
        (None, false) => None,
    };
    if explicit.is_some() && push_host.is_none() {
        return Err(Error::usage(
            "--username/--password-stdin apply to the push target; use them with --push",
        ));
    }
    Ok(chain_for(push_host, explicit, ChainEnv::from_process()))
}

fn read_secret_stdin() -> Result<Secret> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading the password from standard input")?;
    let s = s.trim_end_matches(['\n', '\r']).to_owned();
    if s.is_empty() {
        return Err(Error::usage("--password-stdin: standard input was empty"));
    }
    Ok(Secret::new(s))
}

/// A registry client with the given credentials and a target's upload settings.
pub fn client(settings: &Settings, chain: Chain, target: Option<&Target>) -> Result<Client> {
    let mut opts = ClientOptions {
        insecure_hosts: settings.insecure_registries.clone(),
        connect_timeout: settings.connect_timeout,
        ..ClientOptions::default()
    };
    if let Some(t) = target {
        if t.insecure {
            opts.insecure_hosts.push(t.repository.registry.clone());
        }
        opts.chunk_size = t.chunk_size;
        opts.monolithic_max = t.chunk_size;
        opts.concurrency = t.concurrency;
        opts.read_timeout = t.idle_timeout;
        opts.response_timeout = t.response_timeout;
    }
    Ok(Client::new(Arc::new(chain), opts)?)
}

/// Print a JSON value on stdout.
pub fn print_json(v: &serde_json::Value) {
    crate::out!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
