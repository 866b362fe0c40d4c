//! Unit tests of the registry client's plumbing: redaction, error bodies, URLs.

use super::*;

#[test]
fn redaction_drops_userinfo_and_secret_query_values() {
    let u = Url::parse(
            "https://user:hunter2@r.example/v2/x/blobs/uploads/abc?_state=SECRET&digest=sha256:aa&X-Amz-Signature=SIG",
        )
        .unwrap();
    let r = Redacted::new(&u).to_string();
    assert!(!r.contains("hunter2") && !r.contains("user@"), "{r}");
    assert!(!r.contains("SECRET") && !r.contains("SIG"), "{r}");
    assert!(r.contains("digest=sha256:aa"), "{r}");
    assert!(r.contains("_state=<redacted>"), "{r}");
}

#[test]
fn registry_error_bodies_give_code_and_message() {
    let b = parse_error_body(
        400,
        "application/json",
        br#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":{}}]}"#,
    );
    assert_eq!(
        b.to_string(),
        "MANIFEST_INVALID: manifest invalid (HTTP 400)"
    );
}

#[test]
fn html_bodies_are_summarised_not_parsed() {
    let b = parse_error_body(
        502,
        "text/html",
        b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
    );
    let s = b.to_string();
    assert!(
        s.contains("HTML page") && s.contains("502 Bad Gateway"),
        "{s}"
    );
}

#[test]
fn loopback_is_plain_http_and_others_need_naming() {
    let c = Client::new(
        Arc::new(crate::credentials::Chain::new()),
        ClientOptions {
            insecure_hosts: vec!["reg.internal:5000".into()],
            ..ClientOptions::default()
        },
    )
    .unwrap();
    assert_eq!(c.base_url("127.0.0.1:5000").unwrap().scheme(), "http");
    assert_eq!(c.base_url("reg.internal:5000").unwrap().scheme(), "http");
    assert_eq!(c.base_url("ghcr.io").unwrap().scheme(), "https");
    assert_eq!(
        c.base_url("docker.io").unwrap().as_str(),
        "https://registry-1.docker.io/v2/"
    );
}
