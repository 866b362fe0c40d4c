//! Which files of a release go into which layer, stablest first: ERTS with
//! OTP/Elixir applications; dependencies; big static assets; the application.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{Release, ReleaseError};
use crate::layer::PlannedLayer;
use crate::tree::Tree;

/// Applications that come with Erlang/OTP or Elixir: they change only with
/// the toolchain, so they share the ERTS layer.
pub const OTP_APPS: &[&str] = &[
    // Erlang/OTP
    "asn1",
    "common_test",
    "compiler",
    "cosEvent",
    "cosEventDomain",
    "cosFileTransfer",
    "cosNotification",
    "cosProperty",
    "cosTime",
    "cosTransactions",
    "crypto",
    "debugger",
    "dialyzer",
    "diameter",
    "edoc",
    "eldap",
    "erl_docgen",
    "erl_interface",
    "erts",
    "et",
    "eunit",
    "ftp",
    "gs",
    "hipe",
    "ic",
    "inets",
    "jinterface",
    "kernel",
    "megaco",
    "mnesia",
    "observer",
    "odbc",
    "orber",
    "os_mon",
    "otp_mibs",
    "parsetools",
    "percept",
    "public_key",
    "reltool",
    "runtime_tools",
    "sasl",
    "snmp",
    "ssh",
    "ssl",
    "stdlib",
    "syntax_tools",
    "tftp",
    "tools",
    "typer",
    "webtool",
    "wx",
    "xmerl",
    // Elixir
    "eex",
    "elixir",
    "ex_unit",
    "iex",
    "logger",
    "mix",
];

/// How a release is split into layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanOptions {
    /// More applications that belong to the project itself (umbrella apps),
    /// besides the one named like the release.
    pub own_apps: Vec<String>,
    /// The own applications' `priv/static` get a layer of their own from
    /// this many bytes on (default 1 MiB).
    pub assets_min_bytes: u64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            own_apps: Vec::new(),
            assets_min_bytes: 1 << 20,
        }
    }
}

/// The layers a release becomes, stablest first (`erts`, `deps`, `assets`,
/// `app`; empty ones left out). Everything sits under `app/` (`/app`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerPlan {
    /// The layers, in the order they are applied.
    pub layers: Vec<PlannedLayer>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Otp,
    Dep,
    Own,
}

/// Layer-relative root of the install directory (`/app` in the image).
fn prefix() -> PathBuf {
    PathBuf::from(super::INSTALL_DIR.trim_start_matches('/'))
}

pub(super) fn plan(release: &Release, opts: &PlanOptions) -> Result<LayerPlan, ReleaseError> {
    let prefix = prefix();
    let root = release.root();
    let tree = release.tree();
    let top_level = |dir: &Path| names_in(tree, dir);
    let is_real_dir = |p: &Path| tree.symlink_metadata(p).is_ok_and(|m| m.is_dir());
    let rooted = |name: &str, description: &str| {
        PlannedLayer::rooted(name, description, root, &prefix).in_tree(tree.clone())
    };
    let lib = root.join("lib");
    let lib_dest = prefix.join("lib");

    for own in &opts.own_apps {
        if !release.apps().iter().any(|a| &a.name == own) {
            return Err(ReleaseError::UnknownOwnApp {
                app: own.clone(),
                release: release.name().to_owned(),
                available: release
                    .apps()
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let kind_of = |name: &str| {
        if name == release.name() || opts.own_apps.iter().any(|a| a == name) {
            Kind::Own
        } else if OTP_APPS.contains(&name) {
            Kind::Otp
        } else {
            Kind::Dep
        }
    };
    // lib/ directory name → kind, for the apps the .rel file lists.
    let listed: Vec<(String, Kind)> = release
        .apps()
        .iter()
        .map(|a| (a.dir_name(), kind_of(&a.name)))
        .collect();
    let dirs_of = |k: Kind| -> Vec<&str> {
        listed
            .iter()
            .filter(|(_, kind)| *kind == k)
            .map(|(d, _)| d.as_str())
            .collect()
    };
    let no_skip = |_: &Path| false;

    // ERTS and OTP/Elixir applications.
    let mut erts = rooted("erts", "ERTS and OTP/Elixir applications");
    erts.add(root, &prefix);
    for name in top_level(root)? {
        let path = root.join(&name);
        if name.to_string_lossy().starts_with("erts-") && is_real_dir(&path) {
            erts.add_tree(&path, &prefix.join(&name), &no_skip)?;
        }
    }
    erts.add(&lib, &lib_dest);
    for dir in dirs_of(Kind::Otp) {
        erts.add_tree(&lib.join(dir), &lib_dest.join(dir), &no_skip)?;
    }

    // Dependencies.
    let mut deps = rooted("deps", "dependencies");
    let dep_dirs = dirs_of(Kind::Dep);
    deps.add(root, &prefix);
    deps.add(&lib, &lib_dest);
    for dir in &dep_dirs {
        deps.add_tree(&lib.join(dir), &lib_dest.join(dir), &no_skip)?;
    }

    // Static assets of the own applications, when big enough to pay.
    let mut assets = rooted("assets", "static assets");
    let mut static_dirs = Vec::new();
    let mut static_bytes = 0;
    for dir in dirs_of(Kind::Own) {
        let rel = Path::new(dir).join("priv").join("static");
        let path = lib.join(&rel);
        if !is_real_dir(&path) {
            continue;
        }
        assets.add(root, &prefix);
        assets.add(&lib, &lib_dest);
        assets.add(lib.join(dir), lib_dest.join(dir));
        assets.add(lib.join(dir).join("priv"), lib_dest.join(dir).join("priv"));
        static_bytes += assets.add_tree(&path, &lib_dest.join(&rel), &no_skip)?;
        static_dirs.push(path);
    }
    let split_assets = !static_dirs.is_empty() && static_bytes >= opts.assets_min_bytes;
    if !split_assets {
        static_dirs.clear();
    }

    // The application: own apps (minus split assets), lib/ directories the
    // .rel file does not list, and everything else at the top level.
    let mut app = rooted("app", "the application");
    app.add(root, &prefix);
    let skip_static = |p: &Path| static_dirs.iter().any(|s| s == p);
    let in_other_layers: BTreeSet<&str> = listed
        .iter()
        .filter(|(_, k)| *k != Kind::Own)
        .map(|(d, _)| d.as_str())
        .collect();
    for name in top_level(root)? {
        let path = root.join(&name);
        let dest = prefix.join(&name);
        if name.to_string_lossy().starts_with("erts-") && is_real_dir(&path) {
            continue;
        }
        if name == "lib" && is_real_dir(&path) {
            app.add(&path, &dest);
            for child in top_level(&path)? {
                if in_other_layers.contains(child.to_string_lossy().as_ref()) {
                    continue;
                }
                app.add_tree(&path.join(&child), &dest.join(&child), &skip_static)?;
            }
            continue;
        }
        app.add_tree(&path, &dest, &no_skip)?;
    }

    let mut layers = vec![erts];
    if !dep_dirs.is_empty() {
        layers.push(deps);
    }
    if split_assets {
        layers.push(assets);
    }
    layers.push(app);
    Ok(LayerPlan { layers })
}

/// Names in a directory, sorted.
fn names_in(tree: &Tree, dir: &Path) -> Result<Vec<std::ffi::OsString>, ReleaseError> {
    let list = |source| {
        ReleaseError::Io(crate::error::IoError {
            action: "listing",
            path: dir.to_owned(),
            source,
        })
    };
    let mut names = tree.read_dir(dir).map_err(list)?;
    names.sort();
    Ok(names)
}
