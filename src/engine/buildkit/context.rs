//! The build context and Dockerfile: the embedded `docker/Dockerfile` and
//! `.dockerignore`, and the project staged without its build outputs.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::io as io_err;

use super::BuildkitError;

/// The Dockerfile shipped in `docker/`, so the tool builds from any checkout.
pub const DOCKERFILE: &str = include_str!("../../../docker/Dockerfile");
/// The `.dockerignore` shipped in `docker/`, used when the project has none.
pub const DOCKERIGNORE: &str = include_str!("../../../docker/.dockerignore");

pub(super) const TITLE: &str = "org.opencontainers.image.title";
pub(super) const VERSION: &str = "org.opencontainers.image.version";

/// Lines of engine output kept for the error when a build fails.
pub(super) const TAIL_LINES: usize = 30;

// ------------------------------------------------------------- contexts ---

/// Copy (hard-link where possible) the project into `dest` for a build
/// context, leaving out build outputs (`_build`, `deps`, `node_modules`),
/// `.git` and the directories in `skip` (the layout, when it lies inside the
/// project: `dest` is under it), and add the embedded `.dockerignore`. Used
/// when the project has no `.dockerignore` of its own, so the engine never
/// walks `_build` or `deps`.
pub fn stage_context(project: &Path, dest: &Path, skip: &[PathBuf]) -> Result<(), BuildkitError> {
    fn walk(src: &Path, dst: &Path, top: bool, skip: &[PathBuf]) -> Result<(), BuildkitError> {
        fs::create_dir_all(dst).map_err(io_err("creating", dst))?;
        for entry in fs::read_dir(src).map_err(io_err("reading", src))? {
            let entry = entry.map_err(io_err("reading", src))?;
            let name = entry.file_name();
            let outputs = name == "node_modules"
                || (top && (name == "_build" || name == "deps" || name == ".git"));
            if outputs {
                continue;
            }
            let from = entry.path();
            let to = dst.join(&name);
            let ft = entry.file_type().map_err(io_err("reading", &from))?;
            if ft.is_dir() {
                if fs::canonicalize(&from).is_ok_and(|c| skip.contains(&c)) {
                    continue;
                }
                walk(&from, &to, false, skip)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&from).map_err(io_err("reading", &from))?;
                std::os::unix::fs::symlink(&target, &to).map_err(io_err("creating", &to))?;
            } else if ft.is_file() && fs::hard_link(&from, &to).is_err() {
                fs::copy(&from, &to).map_err(io_err("copying", &from))?;
            }
        }
        Ok(())
    }
    fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
    let skip: Vec<PathBuf> = skip
        .iter()
        .map(PathBuf::as_path)
        .chain([dest])
        .filter_map(|p| fs::canonicalize(p).ok())
        .collect();
    walk(project, dest, true, &skip)?;
    let ignore = dest.join(".dockerignore");
    fs::write(&ignore, DOCKERIGNORE).map_err(io_err("writing", &ignore))?;
    Ok(())
}
