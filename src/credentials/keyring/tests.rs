//! Unit tests of the keyring store.

use super::*;

#[test]
fn the_index_holds_host_names_and_stores_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join(INDEX_FILE);
    let k = KeyringSource::new(Vec::new(), Some(path.clone()));
    k.index_update("Registry.Example:5000", Some(Store::Keyutils));
    k.index_update("ghcr.io", Some(Store::SecretService));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("\"Registry.Example:5000\": \"keyutils\""),
        "{text}"
    );
    assert_eq!(k.index_read().len(), 2);
    k.index_update("ghcr.io", None);
    assert_eq!(
        k.index_read().into_keys().collect::<Vec<_>>(),
        ["Registry.Example:5000"]
    );
}

#[test]
fn without_any_store_storing_says_there_is_no_keyring() {
    let k = KeyringSource::new(Vec::new(), None);
    let err = k
        .store("ghcr.io", "u", &Secret::new("hunter2"))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("no OS keyring") && !text.contains("hunter2"),
        "{text}"
    );
    assert!(k.get("ghcr.io").unwrap().is_none());
}
