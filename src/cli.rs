//! Command-line types (clap). What the user typed, parsed and nothing more:
//! `settings` turns these into validated `Settings`; no work happens here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Build and publish the Guildhall container image.
///
/// `build` turns a mix release into an OCI image on a debian-slim base (no
/// Docker needed), or drives the Dockerfile through BuildKit; `push`
/// publishes it to the Forgejo registry or ghcr.io.
#[derive(Debug, Parser)]
#[command(
    name = "guildhall-image",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage/config, 3 bad input (release, layout, base, tag), \
4 preflight failed, 5 registry/network, 6 authentication, 7 build engine."
)]
pub struct Cli {
    /// More logging on stderr (-v: which sources and requests; -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress output; errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print a JSON result on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Config file (default: ./guildhall-image.toml when present).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "GUILDHALL_IMAGE_CONFIG"
    )]
    pub config: Option<PathBuf>,
    /// Speak plain HTTP to this registry (loopback registries always are). Repeatable.
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// `build` has many flags; the value is made once per run, so its size is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the image into the local OCI layout.
    Build(BuildArgs),
    /// Push an image from the local OCI layout to a registry.
    Push(PushArgs),
    /// Show an image: manifest digest, platform, layers, config.
    Inspect(InspectArgs),
    /// Check registry credentials and store them in the OS keyring.
    Login(LoginArgs),
    /// Remove stored credentials for a registry.
    Logout(LogoutArgs),
    /// List registries with stored credentials, and which source answers for a host.
    Credentials(CredentialsArgs),
    /// Remove blobs nothing in the layout references any more.
    Gc(GcArgs),
}

/// Build engines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Assemble the mix release onto the base, without Docker.
    Direct,
    /// Build docker/Dockerfile with BuildKit and import the result.
    Buildkit,
}

/// `build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build engine.
    #[arg(long, value_enum)]
    pub engine: Option<Engine>,
    /// The mix project (checkout) to build.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub project: PathBuf,
    /// The release: a directory (_build/prod/rel/APP) or the tarball of the :tar step.
    /// Default: the one release under PROJECT/_build/prod.
    #[arg(long, value_name = "PATH")]
    pub release: Option<PathBuf>,
    /// Run `MIX_ENV=prod mix release` in the project first.
    #[arg(long)]
    pub mix: bool,
    /// Most a release tarball may unpack to (default 8GiB): a bound on what
    /// a hostile or broken tarball can write to its spool in scratch.
    #[arg(long, value_name = "SIZE")]
    pub max_release_size: Option<String>,
    /// Layer compression: gzip (libdeflate level 2, the default), gzip:LEVEL
    /// (1-12), zstd (level 3) or zstd:LEVEL (1-22). zstd layers
    /// (application/vnd.oci.image.layer.v1.tar+zstd) are smaller and faster
    /// to unpack; containerd >= 1.5, Docker >= 23 and podman pull them,
    /// Docker 20.10 and older cannot (nor umoci 0.4.7). Base layers keep their
    /// own compression.
    #[arg(long, value_name = "gzip|zstd[:LEVEL]")]
    pub compression: Option<String>,
    /// Base image: HOST[:PORT]/REPO[:TAG|@sha256:…], a Docker Hub name (debian:bookworm-slim), oci:DIR[:TAG],
    /// or deb:SUITE / deb:auto: a base made from Debian packages alone (libc, the start scripts'
    /// shell and tools, the libraries ERTS and the NIFs need, ca-certificates, tzdata, netbase; no
    /// apt, no perl), with no registry at all. deb:auto picks the oldest suite (bookworm, trixie)
    /// whose glibc and OpenSSL have every symbol version the release needs.
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// A Debian package added in one layer between the base and the release
    /// (repeatable): NAME or NAME=VERSION, resolved with its dependencies
    /// from the suite of the base's /etc/os-release (and its -updates and
    /// -security pockets), verified against Debian's signed archive, pinned
    /// in guildhall-image.lock. Direct engine only.
    #[arg(long = "package", value_name = "NAME[=VERSION]")]
    pub packages: Vec<String>,
    /// Debian mirror for --package and deb: bases (default
    /// http://deb.debian.org/debian; `[debian] mirror`).
    #[arg(long, value_name = "URL")]
    pub debian_mirror: Option<String>,
    /// Debian security mirror (default http://deb.debian.org/debian-security;
    /// `[debian] security_mirror`).
    #[arg(long, value_name = "URL")]
    pub debian_security_mirror: Option<String>,
    /// OpenPGP keyring (binary or armored) that InRelease files must be
    /// signed with, instead of Debian's archive keys built into the tool.
    #[arg(long, value_name = "FILE")]
    pub debian_keyring: Option<PathBuf>,
    /// Resolve the packages again, ignoring guildhall-image.lock (and
    /// rewrite it).
    #[arg(long, conflicts_with = "locked")]
    pub update_packages: bool,
    /// Fail instead of changing guildhall-image.lock (for CI): the packages
    /// must be exactly the locked ones.
    #[arg(long)]
    pub locked: bool,
    /// Tag to give the image (repeatable). Default: the release version.
    #[arg(short, long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// The OCI image layout to write (default: PROJECT/_build/image).
    #[arg(long, value_name = "DIR")]
    pub layout: Option<PathBuf>,
    /// Add or replace an environment variable (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Add or replace a label (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Port to expose (repeatable; default 4000). `none` exposes nothing.
    #[arg(long = "port", value_name = "PORT[/PROTO]")]
    pub ports: Vec<String>,
    /// User to run as (default 65534:65534, nobody:nogroup; keep it numeric
    /// for Kubernetes' runAsNonRoot).
    #[arg(long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Command: a JSON array (["/app/bin/server"]) or words split on spaces.
    #[arg(long, value_name = "CMD")]
    pub cmd: Option<String>,
    /// org.opencontainers.image.source (default: the git remote of the project).
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
    /// org.opencontainers.image.revision (default: the project's git HEAD).
    #[arg(long, value_name = "SHA")]
    pub revision: Option<String>,
    /// Do not check that the release's libraries exist in the base.
    #[arg(long)]
    pub skip_preflight: bool,
    /// Only warn when the release's architecture is not the base's.
    #[arg(long)]
    pub allow_platform_mismatch: bool,
    /// Never contact the base's registry; use the cached base.
    #[arg(long)]
    pub offline: bool,
    /// Push after building (to --to, default the configured default target).
    #[arg(long)]
    pub push: bool,
    /// Where --push sends the image: forgejo, ghcr, or HOST[:PORT]/REPO.
    #[arg(long, value_name = "TARGET", requires = "push")]
    pub to: Option<String>,
    /// With --push: write the pushed digest to this file.
    #[arg(long, value_name = "FILE", requires = "push")]
    pub digest_file: Option<PathBuf>,
    /// Remove blobs no tag references any more after building.
    #[arg(long)]
    pub gc: bool,
    /// Registry credentials (with --password-stdin) for the push target.
    #[command(flatten)]
    pub creds: CredentialArgs,
    /// BuildKit engine options.
    #[command(flatten)]
    pub buildkit: BuildkitArgs,
}

/// Options of the BuildKit engine.
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "BuildKit engine (--engine buildkit)")]
pub struct BuildkitArgs {
    /// How to reach BuildKit: buildctl, buildx, docker (default: detected in that order).
    #[arg(long, value_name = "BUILDER")]
    pub builder: Option<String>,
    /// The buildkitd address for buildctl (default $BUILDKIT_HOST).
    #[arg(long, value_name = "ADDR")]
    pub buildkit_host: Option<String>,
    /// Use this Dockerfile instead of the embedded one.
    #[arg(long, value_name = "PATH")]
    pub dockerfile: Option<PathBuf>,
    /// Build argument (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Build secret, as BuildKit takes it: id=ID,src=FILE or id=ID,env=VAR (repeatable).
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,
    /// Network mode for RUN steps (default, host, none).
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,
    /// Target platform (e.g. linux/amd64).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Build stage to stop at.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Do not use the build cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Import build cache from this registry ref (buildctl, buildx).
    #[arg(long, value_name = "REF")]
    pub cache_from: Vec<String>,
    /// Export build cache to this registry ref (buildctl, buildx).
    #[arg(long, value_name = "REF")]
    pub cache_to: Vec<String>,
}

/// Credentials given on the command line.
#[derive(Debug, Args, Default)]
pub struct CredentialArgs {
    /// Registry user name (the password comes from --password-stdin).
    #[arg(long, short = 'u', value_name = "USER")]
    pub username: Option<String>,
    /// Read the password or token from standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

/// `push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Tag in the layout to push, and to set in the registry (repeatable; all must name the same image).
    #[arg(short, long = "tag", value_name = "TAG", required = true)]
    pub tags: Vec<String>,
    /// Target: forgejo (default), ghcr, a target from the config, or HOST[:PORT]/REPO.
    #[arg(long, value_name = "TARGET")]
    pub to: Option<String>,
    /// The OCI layout to push from (default ./_build/image).
    #[arg(long, value_name = "DIR")]
    pub layout: Option<PathBuf>,
    /// Write the pushed digest (sha256:…) to this file.
    #[arg(long, value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    /// Upload chunk size for large blobs, at least 1MiB (default: 16MiB for Forgejo, to fit Cloudflare's windows; 4MiB for ghcr; 64MiB otherwise). A registry that refuses a body as too large (413, or ghcr's 416) makes the chunks smaller for the rest of the push.
    #[arg(long, value_name = "SIZE")]
    pub chunk_size: Option<String>,
    /// Blobs uploaded at once.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Give up on a request (and resume from the upload's status) when no byte could be sent for this long [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Give up on a request (and resume from the upload's status) when no answer came this long after it was sent in full; above Cloudflare's 100 s origin window, so its 524 is heard [default: 150s].
    #[arg(long, value_name = "DURATION")]
    pub response_timeout: Option<String>,
    /// Registry credentials.
    #[command(flatten)]
    pub creds: CredentialArgs,
}

/// `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// oci:DIR[:TAG], or a registry reference.
    pub image: String,
    /// Platform to show when the reference is a multi-platform index.
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
}

/// `login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry host (git.guildhouse.dev, ghcr.io, HOST:PORT); a target name also works.
    pub registry: String,
    /// User name (asked for when not given).
    #[arg(short, long)]
    pub username: Option<String>,
    /// Read the password or token from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Store without checking against the registry (offline).
    #[arg(long)]
    pub no_verify: bool,
}

/// `logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry host.
    pub registry: String,
}

/// `credentials`.
#[derive(Debug, Args)]
pub struct CredentialsArgs {
    /// Show which source would answer for this registry host (never the secret).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
}

/// `gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// The OCI layout (default ./_build/image).
    #[arg(long, value_name = "DIR")]
    pub layout: Option<PathBuf>,
    /// Also check every remaining blob's digest.
    #[arg(long)]
    pub fsck: bool,
}
