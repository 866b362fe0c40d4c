//! Docker credential helpers: `docker-credential-NAME get`, the protocol
//! behind a docker config's `credHelpers` (per host) and `credsStore` (the
//! default for all hosts). The server URL goes in on stdin; a JSON object
//! `{"ServerURL", "Username", "Secret"}` comes back on stdout, where the
//! username `<token>` marks the secret as an identity (refresh) token.
//!
//! A helper runs with a timeout (it may wait on a GPG pin entry or a D-Bus
//! service), its output is never echoed into an error (on success it is the
//! secret), and "credentials not found" is an answer, not a failure.

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Credential, CredentialKind, Secret};
use crate::image::reference::normalize_registry_host;

/// How long a helper may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a helper's stdout or stderr that is read.
const MAX_OUTPUT: u64 = 1024 * 1024;

/// Why a helper gave no answer. Never holds a secret or the helper's output
/// beyond a short, non-JSON first line of its error text.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// `docker-credential-NAME` is not on `PATH`.
    #[error("{program} is not installed (not on PATH)")]
    NotInstalled {
        /// The program looked for.
        program: String,
    },
    /// The helper name cannot name a program.
    #[error("`{name}` is not a credential helper name")]
    BadName {
        /// The name from the config.
        name: String,
    },
    /// It ran and failed.
    #[error("{program} get failed ({status}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
        /// The first line of what it said, when that cannot be a secret.
        message: Option<String>,
    },
    /// It did not finish in time (and was killed).
    #[error("{program} get did not answer within {}s", timeout.as_secs())]
    TimedOut {
        /// The program.
        program: String,
        /// The limit.
        timeout: Duration,
    },
    /// Its answer is not the JSON the protocol says.
    #[error("{program} get answered something that is not {{\"Username\", \"Secret\"}} JSON")]
    BadOutput {
        /// The program.
        program: String,
    },
    /// Running it failed.
    #[error("running {program}: {source}")]
    Io {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A `docker-credential-NAME` program.
#[derive(Clone, Debug)]
pub struct Helper {
    name: String,
    timeout: Duration,
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

impl Helper {
    /// The helper `docker-credential-NAME`, found on `PATH` when run.
    pub fn new(name: &str) -> Helper {
        Helper {
            name: name.to_owned(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// With another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Helper {
        self.timeout = timeout;
        self
    }

    /// The helper's name (`secretservice`, `pass`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The program run: `docker-credential-NAME`.
    pub fn program(&self) -> String {
        format!("docker-credential-{}", self.name)
    }

    /// Credentials the helper holds for a registry host, labelled with
    /// `source`; `None` when it has none.
    pub fn get(&self, host: &str, source: &str) -> Result<Option<Credential>, HelperError> {
        let program = self.program();
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            return Err(HelperError::BadName {
                name: self.name.clone(),
            });
        }
        let io = |source| HelperError::Io {
            program: program.clone(),
            source,
        };
        let mut child = match crate::process::command(&program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HelperError::NotInstalled { program });
            }
            Err(e) => return Err(io(e)),
        };
        // The helper may exit without reading stdin; a broken pipe then is
        // not our failure.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(server_url(host).as_bytes());
        }
        let out = child.stdout.take().map(reader);
        let err = child.stderr.take().map(reader);
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait().map_err(io)? {
                Some(s) => break s,
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(HelperError::TimedOut {
                        program,
                        timeout: self.timeout,
                    });
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        // Held as a secret from here: on success it is one.
        let stdout = Secret::new(out.and_then(|h| h.join().ok()).unwrap_or_default());
        let stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();
        if !status.success() {
            let said = format!("{} {}", stdout.expose(), stderr);
            if said.to_ascii_lowercase().contains("credentials not found") {
                return Ok(None);
            }
            return Err(HelperError::Failed {
                program,
                status: status.to_string(),
                message: safe_message(&stderr).or_else(|| safe_message(stdout.expose())),
            });
        }
        let answer: HelperAnswer = serde_json::from_str(stdout.expose())
            .map_err(|_| HelperError::BadOutput { program })?;
        let secret = Secret::new(answer.secret);
        if secret.is_empty() {
            return Ok(None);
        }
        let (username, kind) = if answer.username == "<token>" {
            (answer.username, CredentialKind::IdentityToken)
        } else {
            (answer.username, CredentialKind::Password)
        };
        Ok(Some(Credential {
            username,
            secret,
            kind,
            source: source.to_owned(),
        }))
    }
}

/// What `docker login` would have stored the host under: Docker Hub as its
/// legacy index URL, anything else as the bare `host[:port]`.
pub fn server_url(host: &str) -> String {
    let h = normalize_registry_host(host);
    if h == "docker.io" {
        "https://index.docker.io/v1/".to_owned()
    } else {
        h
    }
}

fn reader<R: Read + Send + 'static>(r: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.take(MAX_OUTPUT).read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// The first line of a helper's error text, when it cannot be a secret:
/// short, and not JSON (a helper that fails after printing its answer).
fn safe_message(s: &str) -> Option<String> {
    let line = s.lines().map(str::trim).find(|l| !l.is_empty())?;
    if line.contains('{') || line.contains('"') || line.chars().count() > 200 {
        return None;
    }
    Some(line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_is_asked_for_by_its_index_url() {
        assert_eq!(
            server_url("registry-1.docker.io"),
            "https://index.docker.io/v1/"
        );
        assert_eq!(server_url("GHCR.io"), "ghcr.io");
        assert_eq!(server_url("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn error_text_that_might_be_a_secret_is_not_repeated() {
        assert_eq!(safe_message("\nno D-Bus\n"), Some("no D-Bus".into()));
        assert_eq!(safe_message(r#"{"Secret":"x"}"#), None);
        assert_eq!(safe_message(&"x".repeat(300)), None);
    }

    #[test]
    fn a_missing_helper_is_named() {
        let err = Helper::new("surely-not-installed-7f3a")
            .get("ghcr.io", "t")
            .unwrap_err();
        assert!(matches!(err, HelperError::NotInstalled { .. }), "{err}");
        assert!(matches!(
            Helper::new("../evil").get("ghcr.io", "t").unwrap_err(),
            HelperError::BadName { .. }
        ));
    }
}
