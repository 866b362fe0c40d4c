//! `build`'s settings: flags over `[build]` and `[image]` over defaults, every value checked (tags, ports, sizes, the base reference, the source URL, BuildKit's options), with the warnings worth giving before a build.

#[allow(unused_imports)]
use super::*;

/// Validated settings of `build`.
#[derive(Debug)]
pub struct BuildSettings {
    /// Engine.
    pub engine: Engine,
    /// The mix project.
    pub project: PathBuf,
    /// Explicit release path, if any.
    pub release: Option<PathBuf>,
    /// Run `mix release` first.
    pub mix: bool,
    /// Base image.
    pub base: BaseSpec,
    /// Debian packages and where they come from.
    pub debian: DebianSettings,
    /// Tags (empty: the release version).
    pub tags: Vec<String>,
    /// Layout directory.
    pub layout: PathBuf,
    /// Env overrides, in order.
    pub env: Vec<(String, String)>,
    /// Label overrides.
    pub labels: BTreeMap<String, String>,
    /// Exposed ports (`4000/tcp`).
    pub ports: Vec<String>,
    /// User.
    pub user: String,
    /// Command override.
    pub cmd: Option<Vec<String>>,
    /// Source label override.
    pub source: Option<String>,
    /// Revision label override.
    pub revision: Option<String>,
    /// Creation time from `SOURCE_DATE_EPOCH` (seconds).
    pub source_date_epoch: Option<i64>,
    /// Skip preflight.
    pub skip_preflight: bool,
    /// Warn instead of failing on an architecture mismatch.
    pub allow_platform_mismatch: bool,
    /// Do not contact the base's registry.
    pub offline: bool,
    /// Apps that belong to the app layer besides the release's own.
    pub own_apps: Vec<String>,
    /// Static assets at least this big get their own layer.
    pub assets_layer_min: u64,
    /// How the release's layers are compressed (`--compression`).
    pub compression: crate::compress::Codec,
    /// Bounds on extracting a release tarball.
    pub release_limits: crate::release::ExtractLimits,
    /// The BuildKit engine's options.
    pub buildkit: crate::engine::buildkit::BuildkitOptions,
    /// Things worth saying before the build (a user name Kubernetes cannot
    /// check, flags the chosen engine ignores).
    pub warnings: Vec<String>,
    /// Push afterwards, to this target.
    pub push: Option<Target>,
    /// Digest file for --push.
    pub digest_file: Option<PathBuf>,
    /// Collect garbage afterwards.
    pub gc: bool,
}

/// The base of a direct build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseSpec {
    /// An image: a registry reference or `oci:DIR[:TAG]`.
    Image(ImageRef),
    /// `deb:SUITE`: made from Debian packages of that suite alone.
    Debian(String),
    /// `deb:auto`: the oldest supported suite the release's libraries fit.
    DebianAuto,
}

impl std::fmt::Display for BaseSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BaseSpec::Image(r) => write!(f, "{r}"),
            BaseSpec::Debian(s) => write!(f, "deb:{s}"),
            BaseSpec::DebianAuto => f.write_str("deb:auto"),
        }
    }
}

/// Debian packages for the direct engine: what to add, from where, and
/// what to do with the lock file.
#[derive(Clone, Debug)]
pub struct DebianSettings {
    /// `--package` and `[build] packages`, in order, each once.
    pub packages: Vec<crate::debian::Request>,
    /// The mirror.
    pub mirror: url::Url,
    /// The security mirror.
    pub security_mirror: url::Url,
    /// A keyring file to verify `InRelease` with (else the built-in keys).
    pub keyring: Option<PathBuf>,
    /// `guildhall-image.lock`, beside the config file (or in the project).
    pub lock_path: PathBuf,
    /// Reuse, update (`--update-packages`) or require (`--locked`) the lock.
    pub lock_mode: crate::debian::LockMode,
}

impl Settings {
    /// Validate `build`'s flags against the config file and defaults.
    pub fn build(&self, a: &BuildArgs) -> Result<BuildSettings, SettingsError> {
        let f = &self.file;
        let base_text = a
            .base
            .clone()
            .or_else(|| f.build.base.clone())
            .unwrap_or_else(|| DEFAULT_BASE.to_owned());
        let base = parse_base(&base_text)?;
        let debian = self.debian_settings(a)?;
        for t in &a.tags {
            validate_tag(t)?;
        }
        let mut env: Vec<(String, String)> = vec![
            ("LANG".into(), "C.UTF-8".into()),
            ("MIX_ENV".into(), "prod".into()),
            ("HOME".into(), crate::release::INSTALL_DIR.into()),
            // A release evaluates config/runtime.exs at boot and writes the
            // result under RELEASE_TMP: on a read-only root file system (a
            // restricted Pod) only /tmp (an emptyDir) is writable.
            ("RELEASE_TMP".into(), "/tmp".into()),
        ];
        for (k, v) in &f.image.env {
            env.push((k.clone(), v.clone()));
        }
        for kv in &a.env {
            let (k, v) = split_kv("--env", kv)?;
            env.push((k, v));
        }
        let mut labels = f.image.labels.clone();
        for kv in &a.labels {
            let (k, v) = split_kv("--label", kv)?;
            labels.insert(k, v);
        }
        let port_texts: Vec<String> = if !a.ports.is_empty() {
            a.ports.clone()
        } else {
            f.image.ports.clone().unwrap_or_else(|| vec!["4000".into()])
        };
        let mut ports = Vec::new();
        for p in port_texts {
            if p == "none" {
                continue;
            }
            ports.push(parse_port(&p)?);
        }
        if let Some(src) = a.source.as_deref().or(f.image.source.as_deref()) {
            if !crate::vcs::is_web_url(src) {
                return Err(invalid(
                    if a.source.is_some() {
                        "--source"
                    } else {
                        "image.source"
                    },
                    format!(
                        "`{src}` is not an http(s) URL (org.opencontainers.image.source links the package to its repository)"
                    ),
                ));
            }
        }
        let cmd = match &a.cmd {
            Some(c) => Some(parse_cmd(c)?),
            None => f.image.cmd.clone(),
        };
        if cmd.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(invalid("--cmd", "the command is empty"));
        }
        let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(s) if !s.trim().is_empty() => Some(s.trim().parse::<i64>().map_err(|_| {
                invalid(
                    "SOURCE_DATE_EPOCH",
                    format!("`{s}` is not a whole number of seconds"),
                )
            })?),
            _ => None,
        };
        let layout = a
            .layout
            .clone()
            .or_else(|| f.build.layout.clone())
            .unwrap_or_else(|| a.project.join("_build/image"));
        let assets_layer_min = match &f.build.assets_layer_min {
            Some(s) => parse_size(s).map_err(|r| invalid("build.assets_layer_min", r))?,
            None => 1024 * 1024,
        };
        let compression = match (&a.compression, &f.build.compression) {
            (Some(c), _) => c
                .parse::<crate::compress::Codec>()
                .map_err(|e| invalid("--compression", e.to_string()))?,
            (None, Some(c)) => c
                .parse::<crate::compress::Codec>()
                .map_err(|e| invalid("build.compression", e.to_string()))?,
            (None, None) => crate::compress::DEFAULT_GZIP,
        };
        let max_extracted = match a
            .max_release_size
            .as_deref()
            .map(|v| ("--max-release-size", v))
            .or_else(|| {
                f.build
                    .max_release_size
                    .as_deref()
                    .map(|v| ("build.max_release_size", v))
            }) {
            Some((what, v)) => parse_size(v).map_err(|r| invalid(what, r))?,
            None => crate::release::DEFAULT_MAX_EXTRACTED,
        };
        let engine = a.engine.or(f.build.engine).unwrap_or(Engine::Direct);
        let user = a
            .user
            .clone()
            .or_else(|| f.image.user.clone())
            .unwrap_or_else(|| DEFAULT_USER.into());
        let mut warnings = Vec::new();
        match engine {
            Engine::Direct if !is_numeric_user(&user) => warnings.push(format!(
                "user `{user}` is not numeric: Kubernetes refuses to start it under runAsNonRoot \
                 (\"image has non-numeric user\"); give UID[:GID], e.g. --user 65534:65534"
            )),
            Engine::Buildkit => {
                // The Dockerfile decides these; say so rather than drop them silently.
                for (flag, given) in [
                    ("--env", !a.env.is_empty()),
                    ("--port", !a.ports.is_empty()),
                    ("--user", a.user.is_some()),
                    ("--cmd", a.cmd.is_some()),
                    ("--base", a.base.is_some()),
                    ("--release", a.release.is_some()),
                    ("--package", !debian.packages.is_empty()),
                    ("--compression", a.compression.is_some()),
                ] {
                    if given {
                        warnings.push(format!(
                            "{flag} is ignored with --engine buildkit (the Dockerfile decides)"
                        ));
                    }
                }
            }
            Engine::Direct => {}
        }
        let buildkit = buildkit_options(&a.buildkit)?;
        let push = if a.push {
            Some(self.target(a.to.as_deref())?)
        } else {
            None
        };
        Ok(BuildSettings {
            engine,
            project: a.project.clone(),
            release: a.release.clone().or_else(|| f.build.release.clone()),
            mix: a.mix || f.build.mix.unwrap_or(false),
            base,
            debian,
            tags: a.tags.clone(),
            layout,
            env,
            labels,
            ports,
            user,
            cmd,
            source: a.source.clone().or_else(|| f.image.source.clone()),
            revision: a.revision.clone(),
            source_date_epoch,
            skip_preflight: a.skip_preflight,
            allow_platform_mismatch: a.allow_platform_mismatch,
            offline: a.offline,
            own_apps: f.build.own_apps.clone(),
            assets_layer_min,
            compression,
            release_limits: crate::release::ExtractLimits {
                max_bytes: max_extracted,
            },
            buildkit,
            warnings,
            push,
            digest_file: a.digest_file.clone(),
            gc: a.gc,
        })
    }
}

/// `--base`: `deb:SUITE`, `deb:auto`, or an image reference.
fn parse_base(text: &str) -> Result<BaseSpec, SettingsError> {
    if let Some(suite) = text.strip_prefix("deb:") {
        return match suite {
            "auto" => Ok(BaseSpec::DebianAuto),
            s if crate::debian::runner::SUITES.contains(&s) => Ok(BaseSpec::Debian(s.to_owned())),
            s => Err(invalid(
                "--base",
                format!(
                    "deb:{s}: no such suite; deb: bases are made from {} (or deb:auto)",
                    crate::debian::runner::SUITES
                        .iter()
                        .map(|s| format!("deb:{s}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        };
    }
    text.parse()
        .map(BaseSpec::Image)
        .map_err(|e: crate::image::reference::ReferenceError| invalid("--base", e.to_string()))
}

fn mirror_url(what: &str, text: &str) -> Result<url::Url, SettingsError> {
    let u = url::Url::parse(text).map_err(|e| invalid(what, format!("`{text}`: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(invalid(what, format!("`{text}` is not an http(s) URL")));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(invalid(
            what,
            "a mirror URL must not carry credentials (user:password@)",
        ));
    }
    Ok(u)
}

impl Settings {
    /// `--package`, the mirrors, the keyring and the lock mode.
    fn debian_settings(&self, a: &BuildArgs) -> Result<DebianSettings, SettingsError> {
        let f = &self.file;
        let mut packages: Vec<crate::debian::Request> = Vec::new();
        let given = f
            .build
            .packages
            .iter()
            .map(|p| ("build.packages", p))
            .chain(a.packages.iter().map(|p| ("--package", p)));
        for (what, text) in given {
            let r =
                crate::debian::Request::parse(text).map_err(|e| invalid(what, e.to_string()))?;
            // A flag overrides the config's entry of the same name.
            packages.retain(|p| p.name != r.name);
            packages.push(r);
        }
        let mirror = match (a.debian_mirror.as_deref(), f.debian.mirror.as_deref()) {
            (Some(m), _) => mirror_url("--debian-mirror", m)?,
            (None, Some(m)) => mirror_url("debian.mirror", m)?,
            (None, None) => mirror_url("mirror", crate::debian::index::DEFAULT_MIRROR)?,
        };
        let security_mirror = match (
            a.debian_security_mirror.as_deref(),
            f.debian.security_mirror.as_deref(),
        ) {
            (Some(m), _) => mirror_url("--debian-security-mirror", m)?,
            (None, Some(m)) => mirror_url("debian.security_mirror", m)?,
            (None, None) => mirror_url(
                "security mirror",
                crate::debian::index::DEFAULT_SECURITY_MIRROR,
            )?,
        };
        let dir = match &self.file_path {
            Some(p) => p.parent().map(Path::to_owned).unwrap_or_default(),
            None => a.project.clone(),
        };
        let lock_mode = if a.locked {
            crate::debian::LockMode::Locked
        } else if a.update_packages {
            crate::debian::LockMode::Update
        } else {
            crate::debian::LockMode::Reuse
        };
        Ok(DebianSettings {
            packages,
            mirror,
            security_mirror,
            keyring: a
                .debian_keyring
                .clone()
                .or_else(|| f.debian.keyring.clone()),
            lock_path: dir.join(crate::debian::LOCK_FILE),
            lock_mode,
        })
    }
}

/// `--builder`, `--build-arg`, `--secret` and the rest, checked.
pub(super) fn buildkit_options(
    a: &crate::cli::BuildkitArgs,
) -> Result<crate::engine::buildkit::BuildkitOptions, SettingsError> {
    use crate::engine::buildkit::{Builder, BuildkitOptions, EngineFlags, SecretSpec};
    let builder = match a.builder.as_deref() {
        Some(b) => Some(
            b.parse::<Builder>()
                .map_err(|e| invalid("--builder", e.to_string()))?,
        ),
        None => None,
    };
    let build_args = a
        .build_args
        .iter()
        .map(|kv| split_kv("--build-arg", kv))
        .collect::<Result<_, _>>()?;
    let secrets = a
        .secrets
        .iter()
        .map(|s| {
            s.parse::<SecretSpec>()
                .map_err(|e| invalid("--secret", e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    Ok(BuildkitOptions {
        builder,
        buildkit_host: a.buildkit_host.clone(),
        dockerfile: a.dockerfile.clone(),
        build_args,
        flags: EngineFlags {
            secrets,
            network: a.network.clone(),
            platform: a.platform.clone(),
            target: a.target.clone(),
            no_cache: a.no_cache,
            cache_from: a.cache_from.clone(),
            cache_to: a.cache_to.clone(),
        },
    })
}
