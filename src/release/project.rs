//! A mix project and its releases outside the release tree: which release
//! a checkout holds, `mix release` to make one, what `mix.exs` says
//! literally, the default tag of a version, and a release found inside an
//! image's layers (what BuildKit built).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Context as _, Error, Result};
use crate::image::{Descriptor, Manifest};
use crate::layout::Layout;

/// A release version as a tag: `+` (build metadata) is not allowed in tags.
pub fn default_tag(version: &str) -> String {
    version.replace('+', "_")
}

/// The one release under `PROJECT/_build/prod`: `rel/NAME` directories first,
/// else `NAME-VSN.tar.gz` tarballs.
pub fn find_release(project: &Path) -> Result<PathBuf> {
    let prod = project.join("_build/prod");
    let rel = prod.join("rel");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&rel)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.join("releases").is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    match dirs.len() {
        1 => return Ok(dirs.remove(0)),
        0 => {}
        _ => {
            return Err(Error::usage(format!(
                "{} holds several releases ({}); pick one with --release",
                rel.display(),
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut tars: Vec<PathBuf> = fs::read_dir(&prod)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
                .collect()
        })
        .unwrap_or_default();
    tars.sort();
    match tars.len() {
        1 => Ok(tars.remove(0)),
        0 => Err(Error::input(format!(
            "no release found under {} (looked for rel/NAME/ and NAME-VSN.tar.gz); run `MIX_ENV=prod mix release`, pass --mix, or name one with --release",
            prod.display()
        ))),
        _ => Err(Error::usage(format!(
            "{} holds several release tarballs; pick one with --release",
            prod.display()
        ))),
    }
}

/// `MIX_ENV=prod mix release --overwrite` in `project`, its output on stderr
/// (stdout is for results).
pub fn run_mix_release(project: &Path) -> Result<()> {
    eprintln!("running MIX_ENV=prod mix release in {}", project.display());
    let status = crate::process::command("mix")
        .args(["release", "--overwrite"])
        .current_dir(project)
        .env("MIX_ENV", "prod")
        .stdout(std::io::stderr())
        .status()
        .with_context(|| {
            format!(
                "starting `mix release` in {} (is Elixir installed?)",
                project.display()
            )
        })?;
    if !status.success() {
        return Err(Error::Engine(format!(
            "`MIX_ENV=prod mix release` failed in {} ({status})",
            project.display()
        )));
    }
    Ok(())
}

/// What `mix.exs` says literally about the app (no Elixir is run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MixFacts {
    /// `app: :NAME`.
    pub app: Option<String>,
    /// `version: "X"`, or `@version "X"` with `version: @version`.
    pub version: Option<String>,
}

impl MixFacts {
    /// Read `PROJECT/mix.exs` (empty facts when absent).
    pub fn read(project: &Path) -> MixFacts {
        fs::read_to_string(project.join("mix.exs"))
            .map(|t| MixFacts::parse(&t))
            .unwrap_or_default()
    }

    /// Parse the text of a `mix.exs`.
    pub fn parse(text: &str) -> MixFacts {
        let quoted = |s: &str| -> Option<String> {
            let s = s.trim_start().strip_prefix('"')?;
            let end = s.find('"')?;
            let v = &s[..end];
            (!v.is_empty() && !v.contains('#')).then(|| v.to_owned())
        };
        let mut app = None;
        let mut version = None;
        let mut attr = None;
        for line in text.lines() {
            let l = line.trim();
            if l.starts_with('#') {
                continue;
            }
            if let Some(rest) = l.strip_prefix("@version") {
                attr = attr.or_else(|| quoted(rest));
            }
            if let Some(i) = l.find("app:") {
                let rest = l[i + 4..].trim_start();
                if let Some(name) = rest.strip_prefix(':') {
                    let name: String = name
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        app = app.or(Some(name));
                    }
                }
            }
            if let Some(i) = l.find("version:") {
                let before = &l[..i];
                if before.is_empty() || before.ends_with([' ', '[', ',']) {
                    let rest = l[i + 8..].trim_start();
                    if rest.starts_with("@version") {
                        version = version.or(Some(None));
                    } else if let Some(v) = quoted(rest) {
                        version = version.or(Some(Some(v)));
                    } else {
                        version = version.or(Some(None));
                    }
                }
            }
        }
        let version = match version {
            Some(Some(v)) => Some(v),
            // `version: @version`, or not a literal: the attribute if there is one.
            Some(None) => attr,
            None => None,
        };
        MixFacts { app, version }
    }
}

/// The release in an image: `(name, version)` from the newest layer holding
/// `WORKDIR/releases/VSN/NAME.rel`.
pub fn release_in_image(
    layout: &Layout,
    manifest: &Descriptor,
    workdir: &str,
) -> Result<Option<(String, String)>> {
    let m = Manifest::parse(
        &manifest.digest.to_string(),
        &layout.read_blob(&manifest.digest)?,
    )?;
    let prefix = format!("{}/releases/", workdir.trim_matches('/'));
    for l in m.layers.iter().rev() {
        let reader = crate::archive::layer_reader(layout, l)?;
        let mut ar = tar::Archive::new(reader);
        for entry in ar.entries()? {
            let entry = entry?;
            let path = entry
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_owned();
            let Some(rest) = path.strip_prefix(&prefix) else {
                continue;
            };
            if let Some((vsn, file)) = rest.split_once('/') {
                if let Some(name) = file.strip_suffix(".rel").filter(|n| !n.contains('/')) {
                    return Ok(Some((name.to_owned(), vsn.to_owned())));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_metadata_in_a_version_becomes_a_valid_tag() {
        assert_eq!(default_tag("1.2.3+abc"), "1.2.3_abc");
        assert!(crate::settings::validate_tag(&default_tag("1.2.3+abc")).is_ok());
    }

    #[test]
    fn mix_exs_version_and_app_are_read_when_literal() {
        let f = MixFacts::parse(
            "  @version \"1.2.3\"\n  def project do\n    [app: :guildhall,\n     version: @version,\n",
        );
        assert_eq!(
            f,
            MixFacts {
                app: Some("guildhall".into()),
                version: Some("1.2.3".into())
            }
        );
        let g = MixFacts::parse("[app: :x, version: \"0.4.0-rc.1\", elixir: \"~> 1.17\"]");
        assert_eq!(g.version.as_deref(), Some("0.4.0-rc.1"));
        let h = MixFacts::parse("app: :guildhall,\n version: System.get_env(\"V\", \"0.1.0\"),");
        assert_eq!(h.version, None);
    }
}
