//! Unit tests of settings: targets, sizes, tags, ports, credentials in references.

use super::*;

#[test]
fn chunk_sizes_below_one_mebibyte_are_refused_with_the_reason() {
    let e = parse_chunk_size("1").unwrap_err();
    assert!(e.contains("1MiB") && e.contains("refuses"), "{e}");
    assert!(parse_chunk_size("512KiB").is_err());
    assert_eq!(parse_chunk_size("1MiB").unwrap(), 1024 * 1024);
    assert_eq!(parse_chunk_size("16MiB").unwrap(), 16 * 1024 * 1024);
}

#[test]
fn timeouts_read_as_durations() {
    assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_duration("150").unwrap(), Duration::from_secs(150));
    assert_eq!(parse_duration("2m30s").unwrap(), Duration::from_secs(150));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert!(parse_duration("0").is_err());
    assert!(parse_duration("soon").is_err());
    assert!(parse_duration("5x").is_err());
}

#[test]
fn built_in_targets_have_their_registries_chunk_sizes() {
    let s = Settings::from_file(ConfigFile::default());
    let f = s.target(None).unwrap();
    assert_eq!(
        f.repository.to_string(),
        "git.guildhouse.dev/tking/guildhall"
    );
    assert!(f.chunk_size < 100_000_000);
    let g = s.target(Some("ghcr")).unwrap();
    assert_eq!(g.chunk_size, 4 * 1024 * 1024);
    let l = s.target(Some("127.0.0.1:5000/x/y")).unwrap();
    assert!(l.insecure);
    assert!(
        s.target(Some("nowhere"))
            .unwrap_err()
            .to_string()
            .contains("forgejo")
    );
}

#[test]
fn a_target_with_credentials_in_it_is_refused_without_repeating_them() {
    let s = Settings::from_file(ConfigFile::default());
    for to in ["bob:Secret@host.example/repo", "bob:Secret@nowhere"] {
        let e = s.target(Some(to)).unwrap_err().to_string();
        assert!(!e.contains("Secret") && e.contains("credentials"), "{e}");
    }
}

#[test]
fn configured_targets_override_the_built_in_ones() {
    let file: ConfigFile = toml::from_str(
            "default_target = \"staging\"\n[targets.staging]\nrepository = \"reg.example:5000/team/app\"\nchunk_size = \"8MiB\"\nconcurrency = 5\ninsecure = true\n",
        )
        .unwrap();
    let t = Settings::from_file(file).target(None).unwrap();
    assert_eq!(
        (t.name.as_str(), t.chunk_size, t.concurrency, t.insecure),
        ("staging", 8 << 20, 5, true)
    );
}

#[test]
fn sizes_tags_and_ports_are_validated() {
    assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
    assert_eq!(parse_size("100MB").unwrap(), 100_000_000);
    assert!(parse_size("0").is_err() && parse_size("4 parsecs").is_err());
    assert!(
        validate_tag("v0.1.0").is_ok()
            && validate_tag("-x").is_err()
            && validate_tag("a/b").is_err()
    );
    assert_eq!(parse_port("4000").unwrap(), "4000/tcp");
    assert!(parse_port("99999").is_err());
    assert_eq!(
        parse_cmd(r#"["/app/bin/x","start"]"#).unwrap(),
        vec!["/app/bin/x", "start"]
    );
}

#[test]
fn bases_and_packages_read_as_debian_settings_and_bad_ones_name_their_flag() {
    use clap::Parser;
    let build = |args: &[&str]| {
        let cli = crate::cli::Cli::try_parse_from(
            ["guildhall-image", "build"]
                .iter()
                .chain(args.iter())
                .copied(),
        )
        .unwrap();
        let crate::cli::Command::Build(a) = &cli.command else {
            panic!("a build command")
        };
        Settings::from_file(ConfigFile::default()).build(a)
    };
    let s = build(&[
        "--base",
        "deb:trixie",
        "--package",
        "libssl3t64",
        "--locked",
    ])
    .unwrap();
    assert_eq!(s.base, BaseSpec::Debian("trixie".into()));
    assert_eq!(s.debian.packages[0].name, "libssl3t64");
    assert_eq!(s.debian.lock_mode, crate::debian::LockMode::Locked);
    assert!(s.debian.lock_path.ends_with("guildhall-image.lock"));
    assert_eq!(
        build(&["--base", "deb:auto"]).unwrap().base,
        BaseSpec::DebianAuto
    );
    for (args, flag) in [
        (&["--base", "deb:sid"][..], "--base"),
        (&["--package", "Lib SSL"][..], "--package"),
        (&["--package", "libssl3=:1"][..], "--package"),
        (
            &["--debian-mirror", "ftp://mirror.example/debian"][..],
            "--debian-mirror",
        ),
        (
            &["--debian-mirror", "http://u:p@mirror.example/debian"][..],
            "--debian-mirror",
        ),
    ] {
        let e = build(args).unwrap_err().to_string();
        assert!(e.starts_with(flag), "{args:?}: {e}");
        assert!(!e.contains("u:p"), "{e}");
    }
}
