//! The OS keyring as a credential store: one entry per registry host holding
//! username and secret together, in the Secret Service (GNOME Keyring,
//! KWallet) when a D-Bus session offers one, else in the kernel's keyutils
//! user keyring; the macOS Keychain or Windows Credential Manager elsewhere.
//! A keyring that is not there is skipped with one debug line, never fatal.
//!
//! Built on keyring 3.6, not 4: keyring 4 split into `keyring-core` plus one
//! crate per store, and its keyutils store names keys differently, so
//! credentials stored by a 3.x build would silently vanish after an upgrade.
//! 3.6 builds cleanly with the stores we need (`linux-native`,
//! `sync-secret-service` with `crypto-rust`, `vendored` libdbus) and lets us
//! pick the store per entry, which is what the fallback below needs. Keys in
//! keyutils keep 3.x's name, `keyring-rs:HOST@guildhall-image`.
//!
//! Listing: no store can enumerate our entries portably, so the hosts that
//! have credentials (and the store that took them, never a secret) are kept
//! in `$XDG_CONFIG_HOME/guildhall-image/credential-hosts.json`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AuthError, Credential, CredentialKind, CredentialSource, Secret};
use crate::image::reference::normalize_registry_host;

/// The keyring service name: one entry per registry host under it.
pub const SERVICE: &str = "guildhall-image";
/// Selects the stores: `auto` (default), `secret-service`, `keyutils`,
/// `native`, or `none` (no OS keyring at all, e.g. on CI).
pub const MODE_ENV: &str = "GUILDHALL_IMAGE_KEYRING";
/// The index of hosts with stored credentials, in the config directory.
const INDEX_FILE: &str = "credential-hosts.json";
/// How long a read may take before the store counts as unavailable (a hung
/// D-Bus service must not stall a push).
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// How long storing or removing may take: a desktop may show an unlock
/// prompt for the login keyring first.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// One place the OS keeps secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Store {
    /// The freedesktop Secret Service over D-Bus (GNOME Keyring, KWallet).
    SecretService,
    /// The Linux kernel's key retention service: the user keyring (`@u`),
    /// which lives until reboot and is shared by all of the user's sessions.
    Keyutils,
    /// The platform's own store: macOS Keychain, Windows Credential Manager.
    Native,
}

impl Store {
    /// The name used in messages, `--json` and the index.
    pub fn name(self) -> &'static str {
        match self {
            Store::SecretService => "secret-service",
            Store::Keyutils => "keyutils",
            Store::Native => "native",
        }
    }

    /// The stores of this platform, in the order they are tried.
    pub fn platform() -> &'static [Store] {
        if cfg!(target_os = "linux") {
            &[Store::SecretService, Store::Keyutils]
        } else {
            &[Store::Native]
        }
    }

    fn parse(s: &str) -> Option<Store> {
        match s {
            "secret-service" => Some(Store::SecretService),
            "keyutils" => Some(Store::Keyutils),
            "native" => Some(Store::Native),
            _ => None,
        }
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why storing or removing credentials failed. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// No store could take the credentials.
    #[error(
        "no OS keyring is available to store the credentials for {host} ({tried}); \
         on CI give them as GUILDHALL_IMAGE_USERNAME/GUILDHALL_IMAGE_PASSWORD instead"
    )]
    Unavailable {
        /// The registry host.
        host: String,
        /// Each store tried and why it could not (`store: reason; …`).
        tried: String,
    },
    /// A store was there but refused the operation.
    #[error("{action} the credentials for {host} in the {store} keyring: {reason}")]
    Refused {
        /// `storing` or `removing`.
        action: &'static str,
        /// The registry host.
        host: String,
        /// The store.
        store: Store,
        /// What the store said.
        reason: String,
    },
}

/// A host with stored credentials, as `credentials` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoredHost {
    /// The registry host.
    pub host: String,
    /// The user name stored with the secret (`None` when the store cannot be
    /// reached right now).
    pub username: Option<String>,
    /// The store holding it.
    pub store: Store,
    /// Set when the entry could not be checked (the store's reason).
    pub unverified: Option<String>,
}

/// What was stored: username and secret, serialised together as the
/// entry's password so a host has exactly one entry.
#[derive(Serialize)]
struct PayloadOut<'a> {
    username: &'a str,
    secret: &'a str,
}

#[derive(Deserialize)]
struct PayloadIn {
    username: String,
    secret: String,
}

/// The outcome of asking one store.
enum Outcome<T> {
    /// The store answered.
    Done(T),
    /// The store is there and has no entry for the host.
    Absent,
    /// The store is not there (no D-Bus session, locked collection, no
    /// keyutils, timed out): skip it.
    Unavailable(String),
    /// The store is there but the operation failed (bad entry, refused).
    Failed(String),
}

/// The OS keyring: a [`CredentialSource`] for the chain, and the store,
/// delete and list operations of `login`, `logout` and `credentials`.
pub struct KeyringSource {
    stores: Vec<Store>,
    index: Option<PathBuf>,
    /// Stores already found unavailable (and said so, once).
    unavailable: Mutex<HashSet<Store>>,
}

impl KeyringSource {
    /// The platform's stores, narrowed by `GUILDHALL_IMAGE_KEYRING`, with the
    /// index in the user's config directory.
    pub fn from_env() -> KeyringSource {
        let stores = match std::env::var(MODE_ENV) {
            Err(_) => Store::platform().to_vec(),
            Ok(v) => match v.trim() {
                "" | "auto" => Store::platform().to_vec(),
                "none" | "off" => Vec::new(),
                other => match Store::parse(other) {
                    Some(s) => vec![s],
                    None => {
                        tracing::warn!(
                            "{MODE_ENV}=`{other}` is not auto, secret-service, keyutils, native or none; using auto"
                        );
                        Store::platform().to_vec()
                    }
                },
            },
        };
        KeyringSource::new(stores, index_path())
    }

    /// These stores, in this order, and the index at `index` (`None`: no
    /// index, so nothing can be listed).
    pub fn new(stores: Vec<Store>, index: Option<PathBuf>) -> KeyringSource {
        KeyringSource {
            stores,
            index,
            unavailable: Mutex::new(HashSet::new()),
        }
    }

    /// The stores asked, in order.
    pub fn stores(&self) -> &[Store] {
        &self.stores
    }

    /// Whether any store is configured at all (`GUILDHALL_IMAGE_KEYRING=none`
    /// turns the keyring off).
    pub fn is_enabled(&self) -> bool {
        !self.stores.is_empty()
    }

    /// Store `username` and `secret` for `host` in the first store that
    /// takes them, replacing what was there, and record the host in the
    /// index. Returns the store used.
    pub fn store(
        &self,
        host: &str,
        username: &str,
        secret: &Secret,
    ) -> Result<Store, KeyringError> {
        let host = normalize_registry_host(host);
        let payload = Secret::new(
            serde_json::to_string(&PayloadOut {
                username,
                secret: secret.expose(),
            })
            .expect("two strings serialise"),
        );
        let mut tried = Vec::new();
        for &store in &self.stores {
            let p = payload.clone();
            match attempt(store, &host, WRITE_TIMEOUT, move |e| {
                e.set_password(p.expose())
            }) {
                Outcome::Done(()) => {
                    tracing::debug!(host, store = store.name(), "credentials stored");
                    // A later store may hold older credentials for the host;
                    // they would never answer before this one, but `logout`
                    // and `credentials` are clearer without them. (Earlier
                    // stores were unavailable a moment ago: not asked again.)
                    let later = self.stores.iter().skip_while(|&&s| s != store).skip(1);
                    for &other in later {
                        if let Outcome::Done(()) =
                            attempt(other, &host, READ_TIMEOUT, |e| e.delete_credential())
                        {
                            tracing::debug!(
                                host,
                                store = other.name(),
                                "older credentials removed"
                            );
                        }
                    }
                    self.index_update(&host, Some(store));
                    return Ok(store);
                }
                Outcome::Unavailable(reason) => {
                    tracing::debug!(store = store.name(), %reason, "OS keyring unavailable; trying the next");
                    tried.push(format!("{store}: {reason}"));
                }
                Outcome::Absent => tried.push(format!("{store}: no entry")),
                Outcome::Failed(reason) => {
                    return Err(KeyringError::Refused {
                        action: "storing",
                        host,
                        store,
                        reason,
                    });
                }
            }
        }
        if tried.is_empty() {
            tried.push(format!("{MODE_ENV}=none"));
        }
        Err(KeyringError::Unavailable {
            host,
            tried: tried.join("; "),
        })
    }

    /// Remove the credentials for `host` from every store that has them and
    /// from the index. Returns the stores they were removed from (empty:
    /// nothing was stored).
    /// A store the index says holds the host but that cannot be reached now
    /// is an error (saying "nothing stored" would be wrong), and the host
    /// stays in the index.
    pub fn delete(&self, host: &str) -> Result<Vec<Store>, KeyringError> {
        let host = normalize_registry_host(host);
        let recorded = self.index_read().get(&host).copied();
        let mut removed = Vec::new();
        let mut unreachable = None;
        for &store in &self.stores {
            match attempt(store, &host, WRITE_TIMEOUT, |e| e.delete_credential()) {
                Outcome::Done(()) => removed.push(store),
                Outcome::Absent => {}
                Outcome::Unavailable(reason) => {
                    tracing::debug!(store = store.name(), %reason, "OS keyring unavailable; skipped");
                    if recorded == Some(store) {
                        unreachable = Some((store, reason));
                    }
                }
                Outcome::Failed(reason) => {
                    return Err(KeyringError::Refused {
                        action: "removing",
                        host,
                        store,
                        reason,
                    });
                }
            }
        }
        if let (true, Some((store, reason))) = (removed.is_empty(), unreachable) {
            return Err(KeyringError::Refused {
                action: "removing",
                host,
                store,
                reason: format!("the store that holds them cannot be reached ({reason})"),
            });
        }
        self.index_update(&host, None);
        Ok(removed)
    }

    /// The hosts in the index whose credentials are still stored (entries
    /// gone from their store, e.g. keyutils after a reboot, are dropped from
    /// the index). Reads each entry to check it; shows no secret.
    pub fn list(&self) -> Vec<StoredHost> {
        let index = self.index_read();
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (host, recorded) in &index {
            // The recorded store first, then the others.
            let mut order: Vec<Store> = self
                .stores
                .iter()
                .copied()
                .filter(|s| s == recorded)
                .collect();
            order.extend(self.stores.iter().copied().filter(|s| s != recorded));
            let mut found = None;
            let mut unverified = None;
            for store in order {
                match self.read(store, host) {
                    Outcome::Done((user, _secret)) => {
                        found = Some(StoredHost {
                            host: host.clone(),
                            username: Some(user),
                            store,
                            unverified: None,
                        });
                        break;
                    }
                    Outcome::Unavailable(reason) if store == *recorded => unverified = Some(reason),
                    Outcome::Failed(reason) if store == *recorded => unverified = Some(reason),
                    _ => {}
                }
            }
            match (found, unverified) {
                (Some(f), _) => out.push(f),
                (None, Some(reason)) => out.push(StoredHost {
                    host: host.clone(),
                    username: None,
                    store: *recorded,
                    unverified: Some(reason),
                }),
                (None, None) => gone.push(host.clone()),
            }
        }
        for host in gone {
            tracing::debug!(
                host,
                "credentials no longer in the keyring; dropped from the index"
            );
            self.index_update(&host, None);
        }
        out
    }

    /// Read one store, remembering (and saying once) when it is unavailable.
    fn read(&self, store: Store, host: &str) -> Outcome<(String, Secret)> {
        if self
            .unavailable
            .lock()
            .expect("not poisoned")
            .contains(&store)
        {
            return Outcome::Unavailable("unavailable (see above)".into());
        }
        let out = attempt(store, host, READ_TIMEOUT, |e| {
            e.get_password().map(Secret::new)
        });
        match out {
            Outcome::Done(raw) => match serde_json::from_str::<PayloadIn>(raw.expose()) {
                Ok(p) => {
                    let secret = Secret::new(p.secret);
                    if p.username.is_empty() || secret.is_empty() {
                        Outcome::Failed("the stored entry has an empty username or secret".into())
                    } else {
                        Outcome::Done((p.username, secret))
                    }
                }
                // Not the serde error: it can quote the text it choked on.
                Err(_) => {
                    Outcome::Failed("the stored entry is not a guildhall-image credential".into())
                }
            },
            Outcome::Unavailable(reason) => {
                if self.unavailable.lock().expect("not poisoned").insert(store) {
                    tracing::debug!(store = store.name(), %reason, "OS keyring unavailable; skipped");
                }
                Outcome::Unavailable(reason)
            }
            Outcome::Absent => Outcome::Absent,
            Outcome::Failed(r) => Outcome::Failed(r),
        }
    }

    fn index_read(&self) -> BTreeMap<String, Store> {
        let Some(path) = &self.index else {
            return BTreeMap::new();
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the credential index");
                return BTreeMap::new();
            }
        };
        match serde_json::from_slice::<Index>(&text) {
            Ok(i) => i.hosts,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the credential index is not valid; ignored");
                BTreeMap::new()
            }
        }
    }

    /// Set (or with `None` remove) a host in the index. Failing to write it
    /// only costs the listing, so it is a warning.
    fn index_update(&self, host: &str, store: Option<Store>) {
        let Some(path) = &self.index else { return };
        let mut hosts = self.index_read();
        let changed = match store {
            Some(s) => hosts.insert(host.to_owned(), s) != Some(s),
            None => hosts.remove(host).is_some(),
        };
        if !changed {
            return;
        }
        if let Err(e) = write_index(path, hosts) {
            tracing::warn!(path = %path.display(), error = %e, "cannot update the credential index");
        }
    }
}

impl CredentialSource for KeyringSource {
    fn name(&self) -> &str {
        "keyring"
    }

    fn get(&self, host: &str) -> Result<Option<Credential>, AuthError> {
        let host = normalize_registry_host(host);
        for &store in &self.stores {
            match self.read(store, &host) {
                Outcome::Done((username, secret)) => {
                    return Ok(Some(Credential {
                        username,
                        secret,
                        kind: CredentialKind::Password,
                        source: format!("keyring ({store})"),
                    }));
                }
                Outcome::Failed(reason) => {
                    tracing::warn!(host, store = store.name(), %reason, "stored credentials unusable; skipped");
                }
                Outcome::Absent | Outcome::Unavailable(_) => {}
            }
        }
        Ok(None)
    }
}

mod store;

use store::*;
pub use store::{index_path, keyutils_description};

#[cfg(test)]
mod tests;
