//! Talking to one store: each call bounded by a timeout (a Secret Service
//! that hangs must not hang a push), errors classified into "not there"
//! and "refused", the keyutils key names, and the index of hosts with
//! stored credentials.

#[allow(unused_imports)]
use super::*;

/// The index file: host → store. Host names only, never secrets.
#[derive(Serialize, Deserialize, Default)]
pub(super) struct Index {
    #[serde(default)]
    pub(super) about: String,
    #[serde(default)]
    pub(super) hosts: BTreeMap<String, Store>,
}

pub(super) fn write_index(
    path: &std::path::Path,
    hosts: BTreeMap<String, Store>,
) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let index = Index {
        about: "registry hosts with credentials in the OS keyring (written by guildhall-image; no secrets)".into(),
        hosts,
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, &index)?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// `$XDG_CONFIG_HOME/guildhall-image/credential-hosts.json`, else under
/// `~/.config`; `None` without either variable.
pub fn index_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("guildhall-image").join(INDEX_FILE))
}

/// Run `op` on the entry for `host` in `store`, on a thread of its own so a
/// store that hangs (a D-Bus service waiting on an unlock prompt nobody will
/// answer) costs at most `timeout`.
pub(super) fn attempt<T, F>(store: Store, host: &str, timeout: Duration, op: F) -> Outcome<T>
where
    T: Send + 'static,
    F: FnOnce(&::keyring::Entry) -> ::keyring::Result<T> + Send + 'static,
{
    if let Err(reason) = precheck(store) {
        return Outcome::Unavailable(reason);
    }
    let host = host.to_owned();
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("keyring-{}", store.name()))
        .spawn(move || {
            let r = entry(store, &host).and_then(|e| op(&e));
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        return Outcome::Unavailable(format!("cannot start a thread: {e}"));
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(v)) => Outcome::Done(v),
        Ok(Err(e)) => classify(store, e),
        Err(_) => Outcome::Unavailable(format!("no answer within {}s", timeout.as_secs())),
    }
}

/// Sort a keyring error into absent / unavailable / failed, in words that
/// hold no secret (`BadEncoding` carries the bytes in its `Debug` only, so
/// only `Display` is used).
pub(super) fn classify<T>(store: Store, e: ::keyring::Error) -> Outcome<T> {
    use ::keyring::Error as E;
    match e {
        E::NoEntry => Outcome::Absent,
        E::NoStorageAccess(inner) => Outcome::Unavailable(format!("no access: {inner}")),
        E::PlatformFailure(inner) => Outcome::Unavailable(one_line(&inner.to_string())),
        E::BadEncoding(_) => Outcome::Failed("the stored entry is not UTF-8".into()),
        E::Ambiguous(items) => Outcome::Failed(format!(
            "{} entries match in the {store} keyring; remove the extra ones",
            items.len()
        )),
        other => Outcome::Failed(one_line(&other.to_string())),
    }
}

pub(super) fn one_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("").trim();
    if l.chars().count() > 200 {
        format!("{}…", l.chars().take(200).collect::<String>())
    } else {
        l.to_owned()
    }
}

/// Cheap checks that say a store cannot work here, before touching it.
pub(super) fn precheck(store: Store) -> Result<(), String> {
    match store {
        Store::SecretService => {
            // Without a session bus libdbus would try to autolaunch one
            // (through X11), which at best fails slowly.
            let has_env =
                std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|v| !v.is_empty());
            let has_socket = std::env::var_os("XDG_RUNTIME_DIR")
                .map(|d| PathBuf::from(d).join("bus"))
                .is_some_and(|p| p.exists());
            if has_env || has_socket {
                Ok(())
            } else {
                Err("no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is unset)".into())
            }
        }
        Store::Keyutils => Ok(()),
        Store::Native if cfg!(target_os = "linux") => Err(
            "`native` is the macOS / Windows store; on Linux use secret-service or keyutils".into(),
        ),
        Store::Native => {
            // Without a native store compiled in, keyring falls back to an
            // in-memory mock that would "store" and forget.
            use ::keyring::credential::CredentialPersistence as P;
            match ::keyring::default::default_credential_builder().persistence() {
                P::EntryOnly | P::ProcessOnly => {
                    Err("no native keyring on this platform in this build".into())
                }
                _ => Ok(()),
            }
        }
    }
}

/// The keyring entry for `host` in `store`, built explicitly (never through
/// keyring's process-wide default) so the store that answers is known.
pub(super) fn entry(store: Store, host: &str) -> ::keyring::Result<::keyring::Entry> {
    match store {
        #[cfg(target_os = "linux")]
        Store::SecretService => {
            let c = ::keyring::secret_service::SsCredential::new_with_target(None, SERVICE, host)?;
            Ok(::keyring::Entry::new_with_credential(Box::new(c)))
        }
        #[cfg(target_os = "linux")]
        Store::Keyutils => {
            use linux_keyutils::{KeyRing, KeyRingIdentifier};
            // The user keyring, not keyring's default (the session keyring
            // plus the persistent one): a CI step, a second terminal or a
            // `sudo -u` shell may each have their own session keyring, but
            // every process of the user shares `@u`.
            let user = KeyRing::from_special_id(KeyRingIdentifier::User, true)
                .map_err(|e| ::keyring::Error::PlatformFailure(Box::new(e)))?;
            let c = ::keyring::keyutils::KeyutilsCredential {
                session: user,
                persistent: None,
                description: keyutils_description(host),
            };
            Ok(::keyring::Entry::new_with_credential(Box::new(c)))
        }
        #[cfg(not(target_os = "linux"))]
        Store::SecretService | Store::Keyutils => Err(::keyring::Error::PlatformFailure(
            format!("the {store} store exists only on Linux").into(),
        )),
        Store::Native => ::keyring::Entry::new(SERVICE, host),
    }
}

/// The keyutils key description for a host (keyring 3.x's naming).
pub fn keyutils_description(host: &str) -> String {
    format!("keyring-rs:{host}@{SERVICE}")
}
