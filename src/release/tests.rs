//! Tests for reading releases and planning their layers: small hand-made
//! release trees for every error, and the real fixture release (built by
//! `fixtures/build-release.sh` with mix) for the layer plan.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::layer::{self, LayerOptions};

/// The first bytes of this test binary: an ELF header of the host platform.
fn host_elf_header() -> Vec<u8> {
    let mut buf = vec![0u8; 64];
    let mut f = File::open(std::env::current_exe().unwrap()).unwrap();
    f.read_exact(&mut buf).unwrap();
    buf
}

fn write(path: &Path, bytes: impl AsRef<[u8]>, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A minimal release tree: `demo` 0.1.0 on ERTS 13.1.5 with the given apps
/// (plus the own `demo` app).
pub(crate) fn fake_release(dir: &Path, apps: &[(&str, &str)]) -> PathBuf {
    let root = dir.join("rel/demo");
    write(&root.join("bin/demo"), "#!/bin/sh\n", 0o755);
    write(
        &root.join("releases/start_erl.data"),
        "13.1.5 0.1.0\n",
        0o644,
    );
    write(&root.join("releases/COOKIE"), "secret", 0o400);
    let mut all: Vec<(&str, &str)> = apps.to_vec();
    all.push(("demo", "0.1.0"));
    let app_terms: Vec<String> = all
        .iter()
        .map(|(a, v)| format!("{{{a},\"{v}\",permanent}}"))
        .collect();
    write(
        &root.join("releases/0.1.0/demo.rel"),
        format!(
            "%% coding: utf-8\n{{release,{{\"demo\",\"0.1.0\"}},{{erts,\"13.1.5\"}},\n [{}]}}.\n",
            app_terms.join(",\n  ")
        ),
        0o644,
    );
    write(&root.join("releases/0.1.0/start.boot"), "boot", 0o644);
    write(
        &root.join("erts-13.1.5/bin/beam.smp"),
        host_elf_header(),
        0o755,
    );
    write(&root.join("erts-13.1.5/bin/erlexec"), "exec", 0o755);
    for (a, v) in &all {
        write(
            &root.join(format!("lib/{a}-{v}/ebin/{a}.app")),
            format!("{{application,{a},[]}}."),
            0o644,
        );
    }
    root
}

fn open(root: &Path) -> Result<Release, ReleaseError> {
    Release::open(root, &root.join("../scratch"), Default::default())
}

fn missing_what(e: ReleaseError) -> String {
    match e {
        ReleaseError::Missing { what, .. } => what,
        other => panic!("expected Missing, got {other}"),
    }
}

#[test]
fn a_release_directory_is_read_with_name_version_erts_apps_and_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_release(tmp.path(), &[("kernel", "8.5.3"), ("jason", "1.4.1")]);
    let r = open(&root).unwrap();
    assert_eq!(r.name(), "demo");
    assert_eq!(r.version(), "0.1.0");
    assert_eq!(r.erts_version(), "13.1.5");
    assert_eq!(r.platform(), &Platform::host());
    let names: Vec<&str> = r.apps().iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["kernel", "jason", "demo"]);
    assert!(!r.has_server());
    assert_eq!(r.start_command(), ["/app/bin/demo", "start"]);
    write(&root.join("bin/server"), "#!/bin/sh\n", 0o755);
    assert_eq!(open(&root).unwrap().start_command(), ["/app/bin/server"]);
}

#[test]
fn each_missing_part_of_a_release_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_release(tmp.path(), &[("kernel", "8.5.3")]);

    fs::remove_file(root.join("erts-13.1.5/bin/beam.smp")).unwrap();
    assert!(missing_what(open(&root).unwrap_err()).contains("beam.smp"));
    fs::rename(root.join("erts-13.1.5"), root.join("erts-14.0")).unwrap();
    let what = missing_what(open(&root).unwrap_err());
    assert!(
        what.contains("erts-13.1.5") && what.contains("erts-14.0"),
        "{what}"
    );
    fs::rename(root.join("erts-14.0"), root.join("erts-13.1.5")).unwrap();
    write(
        &root.join("erts-13.1.5/bin/beam.smp"),
        host_elf_header(),
        0o755,
    );

    fs::remove_dir_all(root.join("lib/kernel-8.5.3")).unwrap();
    match open(&root).unwrap_err() {
        ReleaseError::MissingApp { app, version, .. } => {
            assert_eq!((app.as_str(), version.as_str()), ("kernel", "8.5.3"))
        }
        other => panic!("{other}"),
    }

    fs::rename(root.join("releases/0.1.0/demo.rel"), root.join("demo.rel")).unwrap();
    assert!(missing_what(open(&root).unwrap_err()).contains(".rel file"));
    fs::rename(root.join("demo.rel"), root.join("releases/0.1.0/demo.rel")).unwrap();

    fs::remove_file(root.join("bin/demo")).unwrap();
    assert!(missing_what(open(&root).unwrap_err()).contains("bin/demo"));

    fs::remove_file(root.join("releases/start_erl.data")).unwrap();
    assert!(missing_what(open(&root).unwrap_err()).contains("start_erl.data"));

    fs::remove_dir_all(root.join("bin")).unwrap();
    assert!(missing_what(open(&root).unwrap_err()).contains("bin/"));

    assert!(matches!(
        open(&tmp.path().join("nope")).unwrap_err(),
        ReleaseError::NotFound { .. }
    ));
    let not_tar = tmp.path().join("release.txt");
    fs::write(&not_tar, "hello").unwrap();
    assert!(matches!(
        open(&not_tar).unwrap_err(),
        ReleaseError::UnknownKind { .. }
    ));
}

#[test]
fn a_start_erl_data_that_disagrees_with_the_rel_file_is_malformed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_release(tmp.path(), &[]);
    fs::write(root.join("releases/start_erl.data"), "13.1.5").unwrap();
    assert!(matches!(
        open(&root).unwrap_err(),
        ReleaseError::Malformed { .. }
    ));
    fs::create_dir_all(root.join("releases/0.2.0")).unwrap();
    fs::copy(
        root.join("releases/0.1.0/demo.rel"),
        root.join("releases/0.2.0/demo.rel"),
    )
    .unwrap();
    fs::write(root.join("releases/start_erl.data"), "13.1.5 0.2.0").unwrap();
    let err = open(&root).unwrap_err();
    assert!(err.to_string().contains("0.2.0"), "{err}");
}

fn layer_names(plan: &LayerPlan) -> Vec<&str> {
    plan.layers.iter().map(|l| l.name.as_str()).collect()
}

fn dests(layer: &layer::PlannedLayer) -> Vec<String> {
    let mut d: Vec<String> = layer
        .entries()
        .map(|e| e.dest.to_string_lossy().into_owned())
        .collect();
    d.sort();
    d.dedup();
    d
}

#[test]
fn the_plan_puts_otp_apps_with_erts_deps_apart_and_the_own_app_last() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_release(
        tmp.path(),
        &[
            ("kernel", "8.5.3"),
            ("elixir", "1.14.0"),
            ("jason", "1.4.1"),
        ],
    );
    write(&root.join("tmp/.keep"), "", 0o644);
    let r = open(&root).unwrap();
    let plan = r.plan(&PlanOptions::default()).unwrap();
    assert_eq!(layer_names(&plan), ["erts", "deps", "app"]);
    let erts = dests(&plan.layers[0]);
    assert!(erts.contains(&"app".to_string()));
    assert!(erts.contains(&"app/erts-13.1.5/bin/beam.smp".to_string()));
    assert!(erts.contains(&"app/lib/kernel-8.5.3/ebin/kernel.app".to_string()));
    assert!(erts.contains(&"app/lib/elixir-1.14.0".to_string()));
    assert!(
        !erts
            .iter()
            .any(|d| d.contains("jason") || d.contains("demo"))
    );
    let deps = dests(&plan.layers[1]);
    assert_eq!(
        deps,
        [
            "app",
            "app/lib",
            "app/lib/jason-1.4.1",
            "app/lib/jason-1.4.1/ebin",
            "app/lib/jason-1.4.1/ebin/jason.app"
        ]
    );
    let app = dests(&plan.layers[2]);
    for want in [
        "app/bin/demo",
        "app/lib/demo-0.1.0/ebin/demo.app",
        "app/releases/COOKIE",
        "app/releases/0.1.0/demo.rel",
        "app/tmp/.keep",
    ] {
        assert!(app.contains(&want.to_string()), "{want} not in {app:?}");
    }
    assert!(
        !app.iter()
            .any(|d| d.contains("erts-") || d.contains("kernel"))
    );
}

#[test]
fn umbrella_apps_named_as_own_stay_in_the_app_layer_and_unknown_ones_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_release(tmp.path(), &[("kernel", "8.5.3"), ("demo_web", "0.1.0")]);
    let r = open(&root).unwrap();
    let opts = PlanOptions {
        own_apps: vec!["demo_web".into()],
        ..PlanOptions::default()
    };
    let plan = r.plan(&opts).unwrap();
    assert_eq!(layer_names(&plan), ["erts", "app"]);
    assert!(dests(&plan.layers[1]).contains(&"app/lib/demo_web-0.1.0/ebin/demo_web.app".into()));
    let opts = PlanOptions {
        own_apps: vec!["demo_wbe".into()],
        ..PlanOptions::default()
    };
    assert!(matches!(
        r.plan(&opts).unwrap_err(),
        ReleaseError::UnknownOwnApp { .. }
    ));
}

#[test]
fn static_assets_get_their_own_layer_only_when_big_enough() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_release(tmp.path(), &[("kernel", "8.5.3")]);
    write(
        &root.join("lib/demo-0.1.0/priv/static/assets/app.js"),
        vec![b'x'; 2000],
        0o644,
    );
    write(&root.join("lib/demo-0.1.0/priv/repo/seeds.exs"), "", 0o644);
    let r = open(&root).unwrap();

    let plan = r.plan(&PlanOptions::default()).unwrap();
    assert_eq!(layer_names(&plan), ["erts", "app"]);
    assert!(
        dests(&plan.layers[1]).contains(&"app/lib/demo-0.1.0/priv/static/assets/app.js".into())
    );

    let opts = PlanOptions {
        assets_min_bytes: 1000,
        ..PlanOptions::default()
    };
    let plan = r.plan(&opts).unwrap();
    assert_eq!(layer_names(&plan), ["erts", "assets", "app"]);
    assert_eq!(
        dests(&plan.layers[1]),
        [
            "app",
            "app/lib",
            "app/lib/demo-0.1.0",
            "app/lib/demo-0.1.0/priv",
            "app/lib/demo-0.1.0/priv/static",
            "app/lib/demo-0.1.0/priv/static/assets",
            "app/lib/demo-0.1.0/priv/static/assets/app.js",
        ]
    );
    let app = dests(&plan.layers[2]);
    assert!(app.contains(&"app/lib/demo-0.1.0/priv/repo/seeds.exs".into()));
    assert!(!app.iter().any(|d| d.contains("priv/static")), "{app:?}");
}

// --- the real fixture release ---------------------------------------------

/// Build (cached) the fixture release with the given extra arguments; `None`
/// when mix is not installed.
pub(crate) fn fixture_release(args: &[&str]) -> Option<PathBuf> {
    if crate::process::command("mix")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("mix not installed: skipping a test on the fixture release");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/build-release.sh");
    let out = crate::process::command(&script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(PathBuf::from(
        String::from_utf8(out.stdout).unwrap().trim_end(),
    ))
}

fn diff_ids(plan: &LayerPlan) -> Vec<(String, crate::image::Digest)> {
    plan.layers
        .iter()
        .map(|l| {
            let stats = layer::diff_id(l, &LayerOptions::default()).unwrap();
            (l.name.clone(), stats.diff_id)
        })
        .collect()
}

#[test]
fn the_fixture_release_reads_the_same_from_its_directory_and_its_tarball() {
    let Some(work) = fixture_release(&[]) else {
        return;
    };
    let dir = open(&work.join("_build/prod/rel/guildhall")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let tb = Release::open(
        &work.join(format!("_build/prod/guildhall-{}.tar.gz", dir.version())),
        scratch.path(),
        Default::default(),
    )
    .unwrap();
    assert_eq!(dir.name(), "guildhall");
    assert!(dir.has_server());
    assert_eq!(dir.start_command(), ["/app/bin/server"]);
    assert_eq!(dir.platform(), &Platform::host());
    assert_eq!(
        (tb.name(), tb.version(), tb.erts_version(), tb.apps()),
        (dir.name(), dir.version(), dir.erts_version(), dir.apps())
    );
    // Read from a spool named by the tarball's path; nothing in scratch.
    assert!(!tb.tree().is_disk());
    assert!(tb.root().starts_with(work.join("_build/prod")));
    assert_eq!(fs::read_dir(scratch.path()).unwrap().count(), 0);
    let (a, b) = (
        diff_ids(&dir.plan(&PlanOptions::default()).unwrap()),
        diff_ids(&tb.plan(&PlanOptions::default()).unwrap()),
    );
    assert_eq!(
        a[0], b[0],
        "the erts layer differs between directory and tarball"
    );
}

#[test]
fn a_code_only_change_leaves_every_layer_but_the_app_layer_identical() {
    let Some(a) = fixture_release(&[]) else {
        return;
    };
    let Some(b) = fixture_release(&["--greeting", "Hello from a code-only change"]) else {
        return;
    };
    let plan = |work: &Path| {
        open(&work.join("_build/prod/rel/guildhall"))
            .unwrap()
            .plan(&PlanOptions {
                assets_min_bytes: 1,
                ..PlanOptions::default()
            })
            .unwrap()
    };
    let (ids_a, ids_b) = (diff_ids(&plan(&a)), diff_ids(&plan(&b)));
    let names: Vec<&str> = ids_a.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["erts", "assets", "app"]);
    assert_eq!(ids_a[..2], ids_b[..2]);
    assert_ne!(ids_a[2], ids_b[2]);
}

// --- hostile releases: metadata that points outside the release ------------

/// A host directory with a file the release must never copy or quote.
fn host_secret(dir: &Path) -> PathBuf {
    let host = dir.join("host-etc");
    write(
        &host.join("shadow"),
        "root:$6$SECRET-HASH:19000:0:99999:7:::\n",
        0o600,
    );
    write(&host.join("ebin/x.app"), "{application,x,[]}.", 0o644);
    host
}

fn set_rel_apps(root: &Path, apps: &str) {
    write(
        &root.join("releases/0.1.0/demo.rel"),
        format!("{{release,{{\"demo\",\"0.1.0\"}},{{erts,\"13.1.5\"}},[{apps}]}}.\n"),
        0o644,
    );
}

#[test]
fn an_application_version_that_climbs_out_of_lib_is_a_malformed_release() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_release(tmp.path(), &[]);
    let host = host_secret(tmp.path());
    // lib/kernel-1/../../../../host-etc resolves to the host directory.
    let climb = format!(
        "1/../../../../{}",
        host.file_name().unwrap().to_string_lossy()
    );
    fs::create_dir_all(root.join("lib/kernel-1")).unwrap();
    set_rel_apps(&root, &format!("{{kernel,\"{climb}\"}},{{demo,\"0.1.0\"}}"));
    assert!(root.join("lib").join(format!("kernel-{climb}")).is_dir());
    let err = open(&root).unwrap_err();
    assert!(matches!(err, ReleaseError::Malformed { .. }), "{err}");
    assert_eq!(err.exit_code(), crate::error::ExitCode::Input);
    assert!(err.to_string().contains("not a plain name"), "{err}");
}

#[test]
fn application_names_and_erts_versions_with_separators_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_release(tmp.path(), &[]);
    set_rel_apps(&root, "{'../../x',\"1\"},{demo,\"0.1.0\"}");
    assert!(matches!(
        open(&root).unwrap_err(),
        ReleaseError::Malformed { .. }
    ));

    let tmp = tempfile::tempdir().unwrap();
    let root = fake_release(tmp.path(), &[]);
    fs::write(root.join("releases/start_erl.data"), "../13.1.5 0.1.0").unwrap();
    let err = open(&root).unwrap_err();
    assert!(err.to_string().contains("ERTS version"), "{err}");
}

#[test]
fn an_application_directory_that_is_a_symlink_out_of_the_release_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_release(tmp.path(), &[("jason", "1.4.1")]);
    let host = host_secret(tmp.path());
    fs::remove_dir_all(root.join("lib/jason-1.4.1")).unwrap();
    std::os::unix::fs::symlink(&host, root.join("lib/jason-1.4.1")).unwrap();
    let err = open(&root).unwrap_err();
    assert!(
        matches!(&err, ReleaseError::Malformed { reason, .. } if reason.contains("symlink")),
        "{err}"
    );
}

#[test]
fn a_metadata_file_that_is_a_symlink_to_a_host_file_is_neither_read_nor_quoted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_release(tmp.path(), &[]);
    let host = host_secret(tmp.path());
    fs::remove_file(root.join("releases/start_erl.data")).unwrap();
    std::os::unix::fs::symlink(host.join("shadow"), root.join("releases/start_erl.data")).unwrap();
    let err = open(&root).unwrap_err();
    let text = err.to_string();
    assert!(!text.contains("SECRET"), "{text}");
    assert!(text.contains("symlink"), "{text}");

    // The same through a symlinked `releases/` directory.
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_release(tmp.path(), &[]);
    let host = host_secret(tmp.path());
    fs::copy(host.join("shadow"), host.join("start_erl.data")).unwrap();
    fs::remove_dir_all(root.join("releases")).unwrap();
    std::os::unix::fs::symlink(&host, root.join("releases")).unwrap();
    let text = open(&root).unwrap_err().to_string();
    assert!(!text.contains("SECRET"), "{text}");
}

#[test]
fn a_malformed_metadata_file_is_quoted_only_briefly_and_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_release(tmp.path(), &[]);
    let junk = format!("one\ntwo three {}", "z".repeat(500));
    fs::write(root.join("releases/start_erl.data"), &junk).unwrap();
    let text = open(&root).unwrap_err().to_string();
    assert!(
        text.len() < 300 && !text.contains("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
}
