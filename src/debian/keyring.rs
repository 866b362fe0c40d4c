//! The OpenPGP keys an archive's `InRelease` must be signed with: Debian's
//! archive keys for bookworm and trixie, built into the binary (from
//! debian-archive-keyring 2023.3+deb12u2, see `keys/README.md`), or a
//! keyring file for another repository. Verifies clear-signed text the way
//! `gpgv` does for apt.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::Tag;
use pgp::types::{KeyDetails, KeyId, PublicKeyTrait};

use super::error::DebianError;

/// The built-in keyrings (binary OpenPGP, as `/usr/share/keyrings` has them).
const DEBIAN_KEYS: [(&str, &[u8]); 6] = [
    (
        "debian-archive-bookworm-automatic",
        include_bytes!("keys/debian-archive-bookworm-automatic.gpg"),
    ),
    (
        "debian-archive-bookworm-security-automatic",
        include_bytes!("keys/debian-archive-bookworm-security-automatic.gpg"),
    ),
    (
        "debian-archive-bookworm-stable",
        include_bytes!("keys/debian-archive-bookworm-stable.gpg"),
    ),
    (
        "debian-archive-trixie-automatic",
        include_bytes!("keys/debian-archive-trixie-automatic.gpg"),
    ),
    (
        "debian-archive-trixie-security-automatic",
        include_bytes!("keys/debian-archive-trixie-security-automatic.gpg"),
    ),
    (
        "debian-archive-trixie-stable",
        include_bytes!("keys/debian-archive-trixie-stable.gpg"),
    ),
];

/// One key that may sign: a primary key or a signing subkey.
#[derive(Clone, Debug)]
struct Signer {
    /// Index into `Keyring::keys`.
    key: usize,
    /// `None` = the primary key, else the subkey's index.
    subkey: Option<usize>,
    fingerprint: Vec<u8>,
    key_id: KeyId,
    /// Seconds since the epoch after which it may not sign.
    expires: Option<u64>,
    revoked: bool,
}

/// A set of trusted signing keys.
#[derive(Clone, Debug)]
pub struct Keyring {
    what: String,
    keys: Vec<SignedPublicKey>,
    signers: Vec<Signer>,
}

/// What a good signature was made by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoodSignature {
    /// The signing key's fingerprint (hex, upper case).
    pub fingerprint: String,
    /// The key's first user ID.
    pub user_id: String,
}

impl Keyring {
    /// Debian's archive, security and stable-release keys for bookworm and
    /// trixie, built into the tool.
    pub fn debian() -> Keyring {
        static PARSED: std::sync::OnceLock<Keyring> = std::sync::OnceLock::new();
        PARSED.get_or_init(Keyring::parse_debian).clone()
    }

    fn parse_debian() -> Keyring {
        let mut keys = Vec::new();
        for (name, bytes) in DEBIAN_KEYS {
            match parse_keys(bytes) {
                Ok(mut k) => keys.append(&mut k),
                // Unreachable with the files shipped; a unit test parses them.
                Err(e) => tracing::error!("built-in keyring {name}: {e}"),
            }
        }
        Keyring::from_keys("Debian's built-in archive keys".into(), keys)
    }

    /// The keys of a keyring file (binary or ASCII-armoured, one or many
    /// keys), as `--debian-keyring FILE` gives.
    pub fn from_file(path: &Path) -> Result<Keyring, DebianError> {
        let bytes = std::fs::read(path).map_err(DebianError::io("reading keyring", path))?;
        Keyring::from_bytes(&path.display().to_string(), &bytes)
    }

    /// The keys in `bytes`; `what` names them in messages.
    pub fn from_bytes(what: &str, bytes: &[u8]) -> Result<Keyring, DebianError> {
        let keys = parse_keys(bytes).map_err(|reason| DebianError::Keyring {
            what: what.to_owned(),
            reason,
        })?;
        let ring = Keyring::from_keys(what.to_owned(), keys);
        if ring.signers.is_empty() {
            return Err(DebianError::Keyring {
                what: what.to_owned(),
                reason: "it holds no valid signing key".into(),
            });
        }
        Ok(ring)
    }

    fn from_keys(what: String, keys: Vec<SignedPublicKey>) -> Keyring {
        let mut signers = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let fpr = hex::encode_upper(key.fingerprint().as_bytes());
            let own_id = key.key_id();
            let own_fpr = key.fingerprint();
            let by_self = |s: &Signature| {
                s.issuer_fingerprint().iter().any(|f| **f == own_fpr)
                    || s.issuer().iter().any(|k| **k == own_id)
            };
            // Keyrings carry third-party certifications (other Debian keys
            // signing these); only the key's own self-signatures count, and
            // each must verify.
            let self_sig = key
                .details
                .users
                .iter()
                .flat_map(|u| {
                    u.signatures
                        .iter()
                        .filter(|s| s.is_certification() && by_self(s))
                        .filter(|s| {
                            s.verify_certification(&key.primary_key, Tag::UserId, &u.id)
                                .is_ok()
                        })
                })
                .max_by_key(|s| s.created().map(|t| t.timestamp()).unwrap_or(0));
            if self_sig.is_none() {
                tracing::warn!("{what}: key {fpr} ignored: no user ID self-signature verifies");
                continue;
            }
            let created = secs(key.primary_key.created_at().timestamp());
            let key_revoked = key.details.revocation_signatures.iter().any(|s| {
                s.typ() == Some(SignatureType::KeyRevocation)
                    && s.verify_key(&key.primary_key).is_ok()
            });
            let primary_expires = self_sig.and_then(expiry_of).map(|d| created + d);
            if self_sig.is_some_and(|s| s.key_flags().sign()) {
                signers.push(Signer {
                    key: i,
                    subkey: None,
                    fingerprint: key.fingerprint().as_bytes().to_vec(),
                    key_id: key.key_id(),
                    expires: primary_expires,
                    revoked: key_revoked,
                });
            }
            for (j, sub) in key.public_subkeys.iter().enumerate() {
                if sub.verify(&key.primary_key).is_err() {
                    tracing::warn!(
                        "{what}: subkey {} of {fpr} ignored: its binding does not verify",
                        hex::encode_upper(sub.fingerprint().as_bytes())
                    );
                    continue;
                }
                let Some(binding) = sub
                    .signatures
                    .iter()
                    .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
                    .max_by_key(|s| s.created().map(|t| t.timestamp()).unwrap_or(0))
                else {
                    continue;
                };
                if !binding.key_flags().sign() {
                    continue;
                }
                let sub_created = secs(sub.key.created_at().timestamp());
                let expires = [expiry_of(binding).map(|d| sub_created + d), primary_expires]
                    .into_iter()
                    .flatten()
                    .min();
                // verify_bindings checked every signature on the subkey,
                // revocations included.
                let revoked = key_revoked
                    || sub
                        .signatures
                        .iter()
                        .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation));
                signers.push(Signer {
                    key: i,
                    subkey: Some(j),
                    fingerprint: sub.fingerprint().as_bytes().to_vec(),
                    key_id: sub.key_id(),
                    expires,
                    revoked,
                });
            }
        }
        Keyring {
            what,
            keys,
            signers,
        }
    }

    /// What the keyring is (for messages).
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// Fingerprints (hex) of the keys that may sign.
    pub fn signing_fingerprints(&self) -> Vec<String> {
        self.signers
            .iter()
            .map(|s| hex::encode_upper(&s.fingerprint))
            .collect()
    }

    /// Verify a clear-signed message (an `InRelease`) and return the text
    /// that was signed — the only part to be read afterwards. Like gpgv for
    /// apt: at least one signature must be good and made by a key of this
    /// keyring that was valid (not expired, not revoked) at `now`;
    /// signatures by unknown keys are ignored; a signature by a trusted
    /// key that does not verify refuses the whole message. `url` names it
    /// in errors.
    pub fn verify_clearsigned(
        &self,
        bytes: &[u8],
        url: &str,
        now: SystemTime,
    ) -> Result<(String, Vec<GoodSignature>), DebianError> {
        let refuse = |reason: String| DebianError::Signature {
            url: url.to_owned(),
            reason,
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|_| refuse("it is not text (not a clear-signed InRelease)".into()))?;
        if !text
            .trim_start()
            .starts_with("-----BEGIN PGP SIGNED MESSAGE-----")
        {
            return Err(refuse(
                "it is not signed (no OpenPGP clear signature)".into(),
            ));
        }
        let (msg, _) = CleartextSignedMessage::from_string(text)
            .map_err(|e| refuse(format!("its OpenPGP clear signature does not parse: {e}")))?;
        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let signed = msg.signed_text();
        let mut good = Vec::new();
        let mut unknown = Vec::new();
        for sig in msg.signatures() {
            let Some(signer) = self.signer_of(sig) else {
                unknown.extend(sig.issuer().iter().map(|k| hex::encode_upper(k.as_ref())));
                continue;
            };
            let key = &self.keys[signer.key];
            let verified = match signer.subkey {
                None => sig.verify(key, signed.as_bytes()),
                Some(j) => sig.verify(&key.public_subkeys[j], signed.as_bytes()),
            };
            let fpr = hex::encode_upper(&signer.fingerprint);
            if let Err(e) = verified {
                return Err(refuse(format!(
                    "its signature by key {fpr} does not verify ({e}): the file was altered"
                )));
            }
            if signer.revoked {
                return Err(refuse(format!(
                    "it is signed by key {fpr}, which is revoked"
                )));
            }
            if let Some(exp) = signer.expires.filter(|&e| e <= now_secs) {
                return Err(refuse(format!(
                    "it is signed by key {fpr}, which expired at {}",
                    super::release::format_date(exp)
                )));
            }
            let created = sig.created().map_or(0, |t| secs(t.timestamp()));
            if let Some(d) = sig
                .signature_expiration_time()
                .filter(|d| d.num_seconds() > 0)
            {
                if created + d.num_seconds().unsigned_abs() <= now_secs {
                    return Err(refuse(format!("its signature by key {fpr} has expired")));
                }
            }
            good.push(GoodSignature {
                fingerprint: fpr,
                user_id: key
                    .details
                    .users
                    .first()
                    .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
                    .unwrap_or_default(),
            });
        }
        if good.is_empty() {
            let seen = if unknown.is_empty() {
                "none".to_owned()
            } else {
                unknown.join(", ")
            };
            return Err(refuse(format!(
                "no signature by a key of {} (signed by: {seen})",
                self.what
            )));
        }
        Ok((signed.replace("\r\n", "\n"), good))
    }

    fn signer_of(&self, sig: &Signature) -> Option<&Signer> {
        let fprs = sig.issuer_fingerprint();
        if let Some(s) = self.signers.iter().find(|s| {
            fprs.iter()
                .any(|f| f.as_bytes() == s.fingerprint.as_slice())
        }) {
            return Some(s);
        }
        let ids = sig.issuer();
        self.signers
            .iter()
            .find(|s| ids.iter().any(|id| **id == s.key_id))
    }
}

/// A key's lifetime from its (self or binding) signature, in seconds after
/// the key's creation; 0 means none.
fn expiry_of(sig: &Signature) -> Option<u64> {
    sig.key_expiration_time()
        .map(|d| d.num_seconds())
        .filter(|&d| d > 0)
        .map(i64::unsigned_abs)
}

fn secs(timestamp: i64) -> u64 {
    u64::try_from(timestamp).unwrap_or(0)
}

fn parse_keys(bytes: &[u8]) -> Result<Vec<SignedPublicKey>, String> {
    let armored = bytes.trim_ascii_start().starts_with(b"-----BEGIN");
    let keys: Vec<SignedPublicKey> = if armored {
        let (iter, _) = SignedPublicKey::from_armor_many(bytes).map_err(|e| e.to_string())?;
        iter.collect::<Result<_, _>>().map_err(|e| e.to_string())?
    } else {
        SignedPublicKey::from_bytes_many(bytes)
            .map_err(|e| e.to_string())?
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?
    };
    if keys.is_empty() {
        return Err("no OpenPGP public key in it".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_keys_parse_and_hold_the_bookworm_and_trixie_signing_subkeys() {
        let ring = Keyring::debian();
        let fprs = ring.signing_fingerprints();
        // The subkeys apt reports as "using RSA key …" on bookworm and trixie.
        for want in [
            "4CB50190207B4758A3F73A796ED0E7B82643E131", // 12/bookworm archive
            "B0CAB9266E8C3929798B3EEEBDE6D2B9216EC7A8", // 12/bookworm security
            "B8E5F13176D2A7A75220028078DBA3BC47EF2265", // 13/trixie archive
            "4D64FEC119C2029067D6E791F8D2585B8783D481", // 12/bookworm stable (EdDSA)
        ] {
            assert!(
                fprs.iter().any(|f| f == want),
                "{want} missing from {fprs:?}"
            );
        }
        assert_eq!(ring.keys.len(), 6);
    }

    #[test]
    fn text_that_is_not_clear_signed_is_refused_as_unsigned() {
        let ring = Keyring::debian();
        let err = ring
            .verify_clearsigned(b"Origin: Debian\n", "http://m/InRelease", SystemTime::now())
            .unwrap_err();
        assert!(err.to_string().contains("it is not signed"), "{err}");
    }

    #[test]
    fn a_file_without_keys_is_not_a_keyring() {
        let err = Keyring::from_bytes("k.gpg", b"nonsense").unwrap_err();
        assert!(err.to_string().starts_with("keyring k.gpg:"), "{err}");
    }
}
