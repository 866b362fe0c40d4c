//! The shipped Forgejo Actions workflow (`.forgejo/workflows/image.yml`),
//! run for real so it cannot rot: its `run:` steps, in order, with the
//! shell it names, in a checkout of the fixture project, with its secrets
//! given as env and its registries pointed (through the workflow's own env)
//! at two local registries: token auth standing in for Forgejo, basic auth
//! for ghcr.io. `uses:` steps (checkout, setup-beam) are what the runner
//! provides; here the checkout is the fixture and Elixir is Debian's.
//!
//! The few expression forms the workflow may use are evaluated here
//! (`secrets.X`, `steps.ID.outputs.X`, `github.X`, `env.X`, `vars.X`);
//! anything else fails the test, so the workflow stays this simple.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Mode, Registry, RegistryOpts, root};
use serde_norway::Value;

const WORKFLOW: &str = ".forgejo/workflows/image.yml";

fn workflow() -> Value {
    let text = std::fs::read_to_string(root().join(WORKFLOW)).expect("the workflow file");
    serde_norway::from_str(&text).expect("the workflow is YAML")
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => panic!("env value {other:?} is not a scalar"),
                    };
                    (k.as_str().expect("string key").to_owned(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What the runner knows while running the steps.
struct Ctx {
    secrets: HashMap<String, String>,
    github: HashMap<String, String>,
    vars: HashMap<String, String>,
    env: BTreeMap<String, String>,
    outputs: HashMap<String, HashMap<String, String>>,
}

impl Ctx {
    /// Replace each `${{ expr }}` in `s`.
    fn eval(&self, s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find("${{") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("}}").expect("unterminated ${{") + start;
            let expr = rest[start + 3..end].trim();
            out.push_str(&self.value(expr));
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        out
    }

    fn value(&self, expr: &str) -> String {
        let parts: Vec<&str> = expr.split('.').collect();
        match parts.as_slice() {
            ["secrets", name] => self.secrets.get(*name).cloned().unwrap_or_default(),
            ["github", name] => self.github.get(*name).cloned().unwrap_or_default(),
            ["vars", name] => self.vars.get(*name).cloned().unwrap_or_default(),
            ["env", name] => self.env.get(*name).cloned().unwrap_or_default(),
            ["steps", id, "outputs", name] => self
                .outputs
                .get(*id)
                .unwrap_or_else(|| panic!("`{expr}`: no step `{id}` ran before"))
                .get(*name)
                .cloned()
                .unwrap_or_default(),
            _ => panic!(
                "the workflow uses `${{{{ {expr} }}}}`, which tests/workflow.rs cannot evaluate"
            ),
        }
    }
}

/// `name=value` lines and `name<<DELIM` blocks, as in GITHUB_OUTPUT/GITHUB_ENV.
fn parse_kv_file(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if let Some((k, delim)) = l.split_once("<<") {
            let mut v = Vec::new();
            for l in lines.by_ref() {
                if l == delim {
                    break;
                }
                v.push(l);
            }
            out.push((k.to_owned(), v.join("\n")));
        } else if let Some((k, v)) = l.split_once('=') {
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    out
}

/// A copy of the fixture project (the "checkout"), as a git repository, with
/// a guildhall-image.toml that takes the base from the cached base layout.
fn checkout(dir: &Path) -> PathBuf {
    let out = Command::new("bash")
        .arg(root().join("fixtures/build-release.sh"))
        .output()
        .expect("build-release.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let work = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    let out = Command::new("bash")
        .arg(root().join("fixtures/make-base-layout.sh"))
        .output()
        .expect("make-base-layout.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();

    let project = dir.join("guildhall");
    let st = Command::new("cp")
        .args(["-a", &work, project.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(
        project.join("guildhall-image.toml"),
        format!("[build]\nbase = \"oci:{base}:runner\"\n"),
    )
    .unwrap();
    let git = |args: &[&str]| {
        let st = Command::new("git")
            .args(args)
            .current_dir(&project)
            .env("GIT_AUTHOR_DATE", "2026-01-02T03:04:05Z")
            .env("GIT_COMMITTER_DATE", "2026-01-02T03:04:05Z")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "fixture"]);
    project
}

/// One step's result.
struct StepRun {
    id: Option<String>,
    name: String,
    stdout: String,
    stderr: String,
}

/// Run the `run:` steps of job `image` in `project`. `overrides` replace
/// workflow-level env (registries); `secrets` are the repository secrets.
fn run_job(
    project: &Path,
    tmp: &Path,
    overrides: &[(&str, &str)],
    secrets: &[(&str, &str)],
    extra_env: &[(&str, String)],
) -> (Ctx, Vec<StepRun>, String) {
    let wf = workflow();
    let job = &wf["jobs"]["image"];
    assert!(job.is_mapping(), "the workflow has a job `image`");
    let shell = job["defaults"]["run"]["shell"].as_str().unwrap_or("bash");
    assert_eq!(shell, "bash", "the test runs steps with bash");

    let mut env = string_map(&wf["env"]);
    for (k, v) in overrides {
        assert!(
            env.contains_key(*k),
            "the workflow has no env {k} to point at the local registry"
        );
        env.insert((*k).into(), (*v).into());
    }
    env.extend(string_map(&job["env"]));

    let sha = "0123456789abcdef0123456789abcdef01234567";
    let github: HashMap<String, String> = [
        ("repository", "tking/guildhall"),
        ("ref_type", "tag"),
        ("ref_name", "v0.1.0-ci"),
        ("ref", "refs/tags/v0.1.0-ci"),
        ("sha", sha),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut ctx = Ctx {
        secrets: secrets
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        github,
        vars: HashMap::new(),
        env,
        outputs: HashMap::new(),
    };

    let files = tmp.join("runner");
    std::fs::create_dir_all(files.join("temp")).unwrap();
    let bin_dir = crate::support::bin_path().parent().unwrap().to_owned();
    let mut path_prefix: Vec<String> = vec![bin_dir.display().to_string()];
    let mut summary = String::new();
    let mut runs = Vec::new();

    let steps = job["steps"].as_sequence().expect("steps");
    for (i, step) in steps.iter().enumerate() {
        let name = step["name"]
            .as_str()
            .or(step["uses"].as_str())
            .unwrap_or("step")
            .to_owned();
        let id = step["id"].as_str().map(str::to_owned);
        let Some(script) = step["run"].as_str() else {
            assert!(
                step["uses"].is_string(),
                "step {i} has neither run nor uses"
            );
            continue;
        };
        assert!(
            !script.contains("${{"),
            "step `{name}`: expressions inside `run:` (use env:)"
        );
        let step_env: BTreeMap<String, String> = string_map(&step["env"])
            .into_iter()
            .map(|(k, v)| (k, ctx.eval(&v)))
            .collect();

        let output = files.join(format!("output-{i}"));
        let env_file = files.join(format!("env-{i}"));
        let path_file = files.join(format!("path-{i}"));
        let summary_file = files.join(format!("summary-{i}"));
        for f in [&output, &env_file, &path_file, &summary_file] {
            std::fs::write(f, "").unwrap();
        }
        let script_file = files.join(format!("step-{i}.sh"));
        std::fs::write(&script_file, script).unwrap();

        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc", "-eo", "pipefail"])
            .arg(&script_file);
        cmd.current_dir(project).env_clear();
        let base_path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{base_path}", path_prefix.join(":")));
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        for (k, v) in &ctx.env {
            cmd.env(k, v);
        }
        for (k, v) in &ctx.github {
            cmd.env(format!("GITHUB_{}", k.to_ascii_uppercase()), v);
        }
        cmd.env("GITHUB_WORKSPACE", project)
            .env("GITHUB_OUTPUT", &output)
            .env("GITHUB_ENV", &env_file)
            .env("GITHUB_PATH", &path_file)
            .env("GITHUB_STEP_SUMMARY", &summary_file)
            .env("RUNNER_TEMP", files.join("temp"))
            .env("CI", "true")
            .env("GITHUB_ACTIONS", "true");
        for (k, v) in &step_env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("bash");
        let run = StepRun {
            id: id.clone(),
            name: name.clone(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(
            out.status.success(),
            "step `{name}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            run.stdout,
            run.stderr
        );
        if let Some(id) = &id {
            ctx.outputs
                .insert(id.clone(), parse_kv_file(&output).into_iter().collect());
        }
        for (k, v) in parse_kv_file(&env_file) {
            ctx.env.insert(k, v);
        }
        for l in std::fs::read_to_string(&path_file)
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
        {
            path_prefix.insert(0, l.to_owned());
        }
        summary.push_str(&std::fs::read_to_string(&summary_file).unwrap());
        runs.push(run);
    }
    (ctx, runs, summary)
}

/// The env a step needs for Debian's Elixir to work offline (the fixture has
/// no dependencies; build-release.sh keeps MIX_HOME/HEX_HOME in its cache).
fn mix_env(tmp: &Path) -> Vec<(&'static str, String)> {
    let cache = std::env::var("GUILDHALL_IMAGE_TEST_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/guildhall-image-tests",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into())
        )
    });
    let home = tmp.join("home");
    std::fs::create_dir_all(&home).unwrap();
    vec![
        ("HOME", home.display().to_string()),
        ("MIX_HOME", format!("{cache}/mix")),
        ("HEX_HOME", format!("{cache}/hex")),
        ("HEX_OFFLINE", "1".into()),
        ("LANG", "C.UTF-8".into()),
        ("LC_ALL", "C.UTF-8".into()),
        ("GUILDHALL_IMAGE_TEST_CACHE", cache),
    ]
}

#[test]
fn the_workflow_builds_and_pushes_to_both_registries_and_reports_the_digest() {
    let forgejo = Registry::start_with(
        Mode::Token,
        RegistryOpts {
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let ghcr = Registry::start_with(
        Mode::Basic,
        RegistryOpts {
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let project = checkout(tmp.path());

    let (ctx, runs, summary) = run_job(
        &project,
        tmp.path(),
        &[
            ("FORGEJO_REGISTRY", &forgejo.host),
            ("FORGEJO_REPOSITORY", "tking/guildhall"),
            ("GHCR_REGISTRY", &ghcr.host),
            ("GHCR_REPOSITORY", "gh-tking/guildhall"),
        ],
        &[
            ("FORGEJO_PACKAGES_USER", &forgejo.user),
            ("FORGEJO_PACKAGES_TOKEN", &forgejo.password),
            ("GHCR_USER", &ghcr.user),
            ("GHCR_TOKEN", &ghcr.password),
        ],
        &mix_env(tmp.path()),
    );

    let install = runs
        .iter()
        .find(|r| r.id.as_deref() == Some("install"))
        .expect("install step ran");
    assert!(
        install.stdout.contains("using "),
        "the binary on PATH is used:\n{}",
        install.stdout
    );
    assert_eq!(
        ctx.outputs["tag"]["tag"], "v0.1.0-ci",
        "a tag ref gives the tag name"
    );

    let digest = ctx.outputs["push-forgejo"]["digest"].clone();
    assert!(
        digest.len() == 71 && digest.starts_with("sha256:"),
        "the digest is a step output: {digest:?}"
    );
    assert_eq!(
        forgejo
            .manifest_digest("tking/guildhall", "v0.1.0-ci")
            .as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(
        ctx.outputs["push-ghcr"]["digest"], digest,
        "one build, the same image in both registries"
    );
    assert_eq!(
        ghcr.manifest_digest("gh-tking/guildhall", "v0.1.0-ci")
            .as_deref(),
        Some(digest.as_str())
    );
    assert!(
        summary.contains(&digest),
        "the digest is in the job summary:\n{summary}"
    );
    assert!(
        summary.contains(&format!("{}/tking/guildhall:v0.1.0-ci", forgejo.host)),
        "{summary}"
    );

    // The secret reached the registry as the env credentials (the token
    // server saw the PAT's user), and no step printed it.
    assert!(
        forgejo
            .token_requests()
            .iter()
            .any(|l| l["user"] == forgejo.user.as_str() && l["status"] == 200)
    );
    for r in &runs {
        for s in [&forgejo.password, &ghcr.password] {
            assert!(
                !r.stdout.contains(s.as_str()) && !r.stderr.contains(s.as_str()),
                "step `{}` printed a secret",
                r.name
            );
        }
    }
    assert!(!summary.contains(&forgejo.password) && !summary.contains(&ghcr.password));
}

#[test]
fn without_a_ghcr_token_the_ghcr_step_is_skipped_not_failed() {
    let wf = workflow();
    let steps = wf["jobs"]["image"]["steps"].as_sequence().unwrap();
    let step = steps
        .iter()
        .find(|s| s["id"].as_str() == Some("push-ghcr"))
        .expect("a push-ghcr step");
    let tmp = tempfile::tempdir().unwrap();
    let out_file = tmp.path().join("out");
    std::fs::write(&out_file, "").unwrap();
    let out = Command::new("bash")
        .args([
            "--noprofile",
            "--norc",
            "-eo",
            "pipefail",
            "-c",
            step["run"].as_str().unwrap(),
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("GITHUB_OUTPUT", &out_file)
        .env("GITHUB_STEP_SUMMARY", tmp.path().join("summary"))
        .env("GHCR_REGISTRY", "ghcr.io")
        .env("GHCR_REPOSITORY", "gh-tking/guildhall")
        .env("TAG", "v1")
        .env("GUILDHALL_IMAGE_USERNAME", "")
        .env("GUILDHALL_IMAGE_PASSWORD", "")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("not pushing"));
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        "",
        "no digest output"
    );
}

#[test]
fn the_tag_step_uses_the_short_commit_off_tags_and_sanitises_ref_names() {
    let wf = workflow();
    let steps = wf["jobs"]["image"]["steps"].as_sequence().unwrap();
    let script = steps
        .iter()
        .find(|s| s["id"].as_str() == Some("tag"))
        .expect("a tag step")["run"]
        .as_str()
        .unwrap()
        .to_owned();
    let tag_for = |ref_type: &str, ref_name: &str| -> String {
        let tmp = tempfile::tempdir().unwrap();
        let out_file = tmp.path().join("out");
        std::fs::write(&out_file, "").unwrap();
        let out = Command::new("bash")
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", &script])
            .current_dir(tmp.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("GITHUB_OUTPUT", &out_file)
            .env("GITHUB_ENV", tmp.path().join("env"))
            .env("GITHUB_REF_TYPE", ref_type)
            .env("GITHUB_REF_NAME", ref_name)
            .env("GITHUB_SHA", "89abcdef0123456789abcdef0123456789abcdef")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_kv_file(&out_file)
            .into_iter()
            .find(|(k, _)| k == "tag")
            .unwrap()
            .1
    };
    assert_eq!(tag_for("tag", "v1.2.3"), "v1.2.3");
    assert_eq!(tag_for("branch", "main"), "89abcdef0123");
    assert_eq!(tag_for("tag", "release/2026 01"), "release-2026-01");
    assert_eq!(tag_for("tag", ".hidden"), "v.hidden");
}
