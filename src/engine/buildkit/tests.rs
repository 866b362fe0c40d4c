//! Unit tests of the BuildKit engine: command lines, detection, step logs,
//! context staging, labels.

use super::command::*;
use super::context::*;
use super::detect::*;
use super::run::*;
use super::*;

fn req() -> BuildRequest {
    BuildRequest {
        context: "/src/app".into(),
        dockerfile: "/tmp/x/Dockerfile".into(),
        build_args: vec![
            ("SKIP_HEX".into(), "1".into()),
            ("A".into(), "x".into()),
            ("SKIP_HEX".into(), "0".into()),
        ],
        flags: EngineFlags {
            secrets: vec![
                "id=hex,env=HEX_ORG_KEY".parse().unwrap(),
                "id=npm,src=/run/npmrc".parse().unwrap(),
            ],
            network: Some("host".into()),
            platform: Some("linux/amd64".into()),
            target: Some("runner".into()),
            no_cache: true,
            cache_from: vec!["reg.example/cache:app".into()],
            cache_to: vec!["type=registry,ref=reg.example/cache:app,mode=min".into()],
        },
        plain_progress: true,
    }
}

#[test]
fn buildctl_gets_the_dockerfile_frontend_options_and_an_oci_output() {
    let inv = buildctl_command(
        Path::new("buildctl"),
        "tcp://bk:1234",
        &req(),
        Path::new("/l/out.tar"),
    );
    assert_eq!(
        inv.args_lossy().join(" "),
        "--addr tcp://bk:1234 build --frontend dockerfile.v0 --local context=/src/app --local dockerfile=/tmp/x \
             --opt filename=Dockerfile --opt build-arg:SKIP_HEX=0 --opt build-arg:A=x --opt target=runner \
             --opt platform=linux/amd64 --opt force-network-mode=host --allow network.host --no-cache \
             --secret id=hex,env=HEX_ORG_KEY --secret id=npm,src=/run/npmrc \
             --import-cache type=registry,ref=reg.example/cache:app \
             --export-cache type=registry,ref=reg.example/cache:app,mode=min --progress plain \
             --output type=oci,dest=/l/out.tar"
    );
    assert!(inv.env.is_empty());
}

#[test]
fn buildx_writes_an_oci_archive_or_loads_on_the_docker_driver() {
    let inv = buildx_command(
        Path::new("/usr/bin/docker"),
        &req(),
        &Output::OciTar("/l/out.tar".into()),
    );
    assert_eq!(
        inv.args_lossy().join(" "),
        "buildx build --file /tmp/x/Dockerfile --build-arg SKIP_HEX=0 --build-arg A=x \
             --secret id=hex,env=HEX_ORG_KEY --secret id=npm,src=/run/npmrc --network host --platform linux/amd64 \
             --target runner --no-cache --progress plain --cache-from type=registry,ref=reg.example/cache:app \
             --cache-to type=registry,ref=reg.example/cache:app,mode=min --output type=oci,dest=/l/out.tar /src/app"
    );
    let load = buildx_command(
        Path::new("docker"),
        &BuildRequest {
            plain_progress: false,
            ..req()
        },
        &Output::DockerImage {
            tag: "t:1".into(),
            iidfile: "/l/iid".into(),
        },
    );
    let args = load.args_lossy().join(" ");
    assert!(
        args.ends_with("--load --tag t:1 --iidfile /l/iid /src/app"),
        "{args}"
    );
    assert!(args.contains("--progress auto"), "{args}");
}

#[test]
fn docker_build_uses_buildkit_a_temporary_tag_and_image_refs_for_cache() {
    let inv = docker_build_command(
        Path::new("/usr/bin/docker"),
        &req(),
        "guildhall-image-tmp:1-2",
        Path::new("/l/iid"),
    );
    assert_eq!(
        inv.env,
        vec![("DOCKER_BUILDKIT".to_owned(), "1".to_owned())]
    );
    assert_eq!(
        inv.args_lossy().join(" "),
        "build --file /tmp/x/Dockerfile --build-arg SKIP_HEX=0 --build-arg A=x \
             --secret id=hex,env=HEX_ORG_KEY --secret id=npm,src=/run/npmrc --network host --platform linux/amd64 \
             --target runner --no-cache --progress plain --cache-from reg.example/cache:app \
             --tag guildhall-image-tmp:1-2 --iidfile /l/iid /src/app"
    );
}

#[test]
fn secrets_are_parsed_by_reference_and_bad_ones_are_refused() {
    let s: SecretSpec = "id=hex,src=/k".parse().unwrap();
    assert_eq!(s.source, SecretSource::File("/k".into()));
    let e: SecretSpec = "env=HEX_KEY".parse().unwrap();
    assert_eq!(
        (e.id.as_str(), e.to_arg().as_str()),
        ("HEX_KEY", "id=HEX_KEY,env=HEX_KEY")
    );
    let t: SecretSpec = "type=env,id=k,src=TOKEN".parse().unwrap();
    assert_eq!(t.source, SecretSource::Env("TOKEN".into()));
    assert!("id=x".parse::<SecretSpec>().is_err());
    assert!("id=x,src=a,env=B".parse::<SecretSpec>().is_err());
    assert!(
        "id=x,value=hunter2"
            .parse::<SecretSpec>()
            .unwrap_err()
            .to_string()
            .contains("unknown key `value`")
    );
}

struct FakeProbe {
    buildx: Result<Option<String>, String>,
    engine: Result<(), String>,
}
impl Probe for FakeProbe {
    fn buildx(&self, _: &Path, _: &EngineEnv) -> Result<Option<String>, String> {
        self.buildx.clone()
    }
    fn docker_engine(&self, _: &Path, _: &EngineEnv) -> Result<(), String> {
        self.engine.clone()
    }
}

#[test]
fn detection_prefers_buildctl_then_buildx_then_docker() {
    let env = EngineEnv {
        docker: Some("/usr/bin/docker".into()),
        buildctl: Some("/usr/bin/buildctl".into()),
        buildkit_host: Some("tcp://bk:1234".into()),
        docker_host: None,
    };
    let all = FakeProbe {
        buildx: Ok(Some("docker-container".into())),
        engine: Ok(()),
    };
    assert_eq!(detect(None, &env, &all).unwrap().builder, Builder::Buildctl);
    let no_host = EngineEnv {
        buildkit_host: None,
        ..env.clone()
    };
    assert_eq!(
        detect(None, &no_host, &all).unwrap().builder,
        Builder::Buildx
    );
    let no_buildx = FakeProbe {
        buildx: Err("'buildx' is not a docker command".into()),
        engine: Ok(()),
    };
    assert_eq!(
        detect(None, &no_host, &no_buildx).unwrap().builder,
        Builder::Docker
    );
    assert_eq!(
        detect(Some(Builder::Docker), &env, &all).unwrap().builder,
        Builder::Docker
    );
    let docker_driver = FakeProbe {
        buildx: Ok(Some("docker".into())),
        engine: Ok(()),
    };
    assert!(detect(None, &no_host, &docker_driver).unwrap().buildx_loads);
}

#[test]
fn a_missing_engine_says_what_was_looked_for_and_how_to_get_one() {
    let env = EngineEnv {
        docker: Some("/usr/bin/docker".into()),
        buildctl: None,
        buildkit_host: None,
        docker_host: Some("unix:///nowhere.sock".into()),
    };
    let none = FakeProbe {
        buildx: Err("'buildx' is not a docker command".into()),
        engine: Err("Cannot connect to the Docker daemon".into()),
    };
    let e = detect(None, &env, &none).unwrap_err();
    let msg = e.to_string();
    for want in [
        "BUILDKIT_HOST",
        "docker buildx",
        "unix:///nowhere.sock",
        "Cannot connect",
        "apt-get install docker.io",
        "--engine direct",
    ] {
        assert!(msg.contains(want), "`{want}` missing from: {msg}");
    }
    assert_eq!(e.exit_code(), crate::error::ExitCode::Engine);
    let forced = detect(
        Some(Builder::Buildctl),
        &EngineEnv {
            buildkit_host: Some("tcp://x:1".into()),
            ..env
        },
        &none,
    )
    .unwrap_err();
    assert!(
        forced.to_string().contains("buildctl is not on PATH"),
        "{forced}"
    );
}

#[test]
fn the_failing_step_is_found_in_buildkit_output() {
    let mut log = StepLog::default();
    for l in [
        "#11 [builder 4/12] RUN mix local.hex --force",
        "#11 DONE 0.1s",
        "#14 [builder 7/12] RUN --mount=type=cache,id=deps,target=/app/deps mix compile",
        "#14 0.9 ** (CompileError) lib/x.ex:1: undefined function foo/0",
        "#14 ERROR: executor failed running [/bin/sh -c mix compile]: exit code: 1",
        "------",
        " > [builder 7/12] RUN mix compile:",
    ] {
        log.push(l.to_owned());
    }
    assert_eq!(
        log.failed_step().as_deref(),
        Some("[builder 7/12] RUN mix compile")
    );
}

#[test]
fn a_staged_context_leaves_out_build_outputs_and_a_layout_inside_the_project() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("proj");
    for d in [
        "lib",
        "_build/prod",
        "deps/x",
        ".git",
        "assets/node_modules/y",
        "image/blobs",
    ] {
        fs::create_dir_all(p.join(d)).unwrap();
    }
    fs::write(p.join("mix.exs"), "x").unwrap();
    fs::write(p.join("lib/a.ex"), "a").unwrap();
    fs::write(p.join("assets/app.js"), "j").unwrap();
    std::os::unix::fs::symlink("a.ex", p.join("lib/link.ex")).unwrap();
    let dest = p.join("image/.guildhall-tmp/buildkit-1/context");
    stage_context(&p, &dest, &[p.join("image")]).unwrap();
    let mut found: Vec<String> = Vec::new();
    fn list(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            out.push(e.path().strip_prefix(root).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                list(root, &e.path(), out);
            }
        }
    }
    list(&dest, &dest, &mut found);
    found.sort();
    assert_eq!(
        found,
        [
            ".dockerignore",
            "assets",
            "assets/app.js",
            "lib",
            "lib/a.ex",
            "lib/link.ex",
            "mix.exs"
        ]
    );
    assert_eq!(
        fs::read_link(dest.join("lib/link.ex")).unwrap(),
        Path::new("a.ex")
    );
}

#[test]
fn the_embedded_dockerfile_has_the_promised_knobs() {
    for want in [
        "ARG ELIXIR_VERSION=1.17.3",
        "ARG OTP_VERSION=27.",
        "ARG DEBIAN_VERSION=bookworm-",
        "hexpm/elixir:${ELIXIR_VERSION}-erlang-${OTP_VERSION}-debian-${DEBIAN_VERSION}",
        "debian:${DEBIAN_VERSION}-slim",
        "SKIP_HEX",
        "SKIP_APT",
        "--mount=type=cache",
        "USER 65534:65534",
        "CMD [\"/app/bin/server\"]",
        "org.opencontainers.image.revision",
    ] {
        assert!(DOCKERFILE.contains(want), "Dockerfile lacks {want}");
    }
    assert!(
        !DOCKERFILE.lines().any(|l| l.starts_with("# syntax=")),
        "a syntax line would pull a frontend image"
    );
    for want in ["_build", "deps", ".git", "node_modules"] {
        assert!(DOCKERIGNORE.contains(want), ".dockerignore lacks {want}");
    }
}
