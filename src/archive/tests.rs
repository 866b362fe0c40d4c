//! Unit tests of the archive import.

use super::*;

#[test]
fn member_names_and_link_targets_are_normalised() {
    assert_eq!(normalize("./abc//layer.tar"), "abc/layer.tar");
    assert_eq!(resolve("abc", "../def/layer.tar"), "def/layer.tar");
    let hex = "a".repeat(64);
    assert_eq!(digest_in_name(&format!("{hex}.json")).unwrap().hex(), hex);
    assert_eq!(
        digest_in_name(&format!("blobs/sha256/{hex}"))
            .unwrap()
            .hex(),
        hex
    );
    assert!(digest_in_name(&format!("{hex}/layer.tar")).is_none());
}
