//! Every exit code the README documents, from the binary, for a failure of
//! the kind the table names.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::*;

fn code(cmd: &mut std::process::Command) -> (Option<i32>, String) {
    let out = run(cmd);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn build_from(work: &Path, release: &Path, base: &str) -> std::process::Command {
    let mut c = bin(work);
    c.args(["build", "--release"])
        .arg(release)
        .args(["--base", base, "--tag", "t", "--layout"])
        .arg(work.join("image"));
    c
}

#[test]
fn each_documented_exit_code_is_what_its_failure_exits_with() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let runner = format!("oci:{}:runner", base_layout().display());
    let bare = format!("oci:{}:bare", base_layout().display());
    let release = release_dir(&[]);

    // 0: success.
    assert_eq!(code(&mut build_from(w, &release, &runner)).0, Some(0));

    // 1: a failure outside the other classes (the layout cannot be created:
    // its parent is a file).
    let file = w.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let (c, err) = code(
        bin(w)
            .args(["build", "--release"])
            .arg(&release)
            .args(["--base", &runner, "--layout"])
            .arg(file.join("image")),
    );
    assert_eq!(c, Some(1), "{err}");

    // 2: bad command line or configuration.
    assert_eq!(code(bin(w).args(["push"])).0, Some(2));
    assert_eq!(code(bin(w).args(["build", "--port", "99999"])).0, Some(2));
    let (c, err) = code(bin(w).args(["push", "--tag", "v1", "--to", "u:p@h.example/x/y"]));
    assert_eq!(c, Some(2), "{err}");

    // 3: bad input (no release where one was looked for; a missing tag).
    let (c, err) = code(
        bin(w)
            .args(["build", "--base", &runner, "--project"])
            .arg(w),
    );
    assert_eq!(c, Some(3), "{err}");
    assert!(err.contains("no release found"), "{err}");
    let (c, err) = code(
        bin(w)
            .args([
                "push",
                "--tag",
                "nope",
                "--to",
                "127.0.0.1:9/x/y",
                "--layout",
            ])
            .arg(w.join("image")),
    );
    assert_eq!(c, Some(3), "{err}");

    // 4: preflight (a :crypto release on a base without libcrypto).
    let (c, err) = code(&mut build_from(w, &release, &bare));
    assert_eq!(c, Some(4), "{err}");

    // 5: registry or network (nothing listens there).
    let (c, err) = code(
        bin(w)
            .args(["push", "--tag", "t", "--to", "127.0.0.1:9/x/y", "--layout"])
            .arg(w.join("image")),
    );
    assert_eq!(c, Some(5), "{err}");

    // 6: authentication (wrong password).
    let reg = Registry::start(Mode::Basic);
    let (c, err) = code(
        bin(w)
            .env("GUILDHALL_IMAGE_USERNAME", &reg.user)
            .env("GUILDHALL_IMAGE_PASSWORD", "not-the-password")
            .env("GUILDHALL_IMAGE_KEYRING", "none")
            .args([
                "push",
                "--tag",
                "t",
                "--to",
                &format!("{}/x/y", reg.host),
                "--layout",
            ])
            .arg(w.join("image")),
    );
    assert_eq!(c, Some(6), "{err}");

    // 7: the build engine (`mix release` under --mix fails).
    let spies = w.join("bin");
    std::fs::create_dir_all(&spies).unwrap();
    std::fs::write(
        spies.join("mix"),
        "#!/bin/sh\necho 'mix: compilation failed' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(spies.join("mix"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (c, err) = code(
        bin(w)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    spies.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .args(["build", "--mix", "--project"])
            .arg(w),
    );
    assert_eq!(c, Some(7), "{err}");
}
