//! Safe extraction of a release tarball (`mix release` with the `:tar` step):
//! no absolute paths, no `..`, nothing written through a symlink; symlinks
//! and hard links kept as such, permission bits set explicitly (umask-free).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use tar::EntryType;

use super::ReleaseError;

/// Extract the gzip tarball `tarball` into the (existing, empty) `dest`.
pub(crate) fn extract(tarball: &Path, dest: &Path) -> Result<(), ReleaseError> {
    let corrupt = |source: io::Error| ReleaseError::CorruptTarball {
        path: tarball.to_owned(),
        source,
    };
    let file = File::open(tarball).map_err(io_err("opening", tarball))?;
    let mut archive = tar::Archive::new(MultiGzDecoder::new(BufReader::new(file)));
    // Directory modes are applied last, so a read-only directory does not
    // stop its own contents from being written.
    let mut dir_modes: BTreeMap<PathBuf, u32> = BTreeMap::new();
    let mut buf = vec![0u8; 256 * 1024];
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw_path = entry.path().map_err(corrupt)?.into_owned();
        let unsafe_entry = |reason: String| ReleaseError::UnsafeTarball {
            path: tarball.to_owned(),
            entry: raw_path.clone(),
            reason,
        };
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName
        ) {
            continue;
        }
        let Some(rel) = sanitize(&raw_path).map_err(&unsafe_entry)? else {
            continue; // `./`
        };
        let mode = || entry.header().mode().map(|m| m & 0o7777).map_err(corrupt);
        let target = dest.join(&rel);
        match kind {
            EntryType::Directory => {
                make_dirs(dest, &rel).map_err(&unsafe_entry)?;
                dir_modes.insert(target, mode()?);
            }
            EntryType::Regular | EntryType::Continuous => {
                let mode = mode()?;
                prepare_leaf(dest, &rel).map_err(&unsafe_entry)?;
                let mut out = File::create(&target).map_err(io_err("creating", &target))?;
                loop {
                    let n = match entry.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(corrupt(e)),
                    };
                    out.write_all(&buf[..n])
                        .map_err(io_err("writing", &target))?;
                }
                drop(out);
                set_mode(&target, mode)?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| unsafe_entry("a symlink without a target".into()))?;
                prepare_leaf(dest, &rel).map_err(&unsafe_entry)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(io_err("creating symlink", &target))?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| unsafe_entry("a hard link without a target".into()))?;
                let link_rel = sanitize(&link)
                    .map_err(&unsafe_entry)?
                    .ok_or_else(|| unsafe_entry("a hard link to the archive root".into()))?;
                check_no_symlinks(dest, &link_rel).map_err(&unsafe_entry)?;
                let original = dest.join(&link_rel);
                if !fs::symlink_metadata(&original).is_ok_and(|m| m.is_file()) {
                    return Err(unsafe_entry(format!(
                        "a hard link to {}, which is not a file extracted before it",
                        link_rel.display()
                    )));
                }
                prepare_leaf(dest, &rel).map_err(&unsafe_entry)?;
                fs::hard_link(&original, &target).map_err(io_err("linking", &target))?;
            }
            other => {
                tracing::warn!(
                    "{}: skipping {} (entry type {:?} is not a file, directory or link)",
                    tarball.display(),
                    raw_path.display(),
                    other
                );
            }
        }
    }
    // Read to the end, so the gzip trailer (CRC, size) is checked.
    io::copy(archive.into_inner().by_ref(), &mut io::sink()).map_err(corrupt)?;
    for (dir, mode) in dir_modes.iter().rev() {
        set_mode(dir, *mode)?;
    }
    Ok(())
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ReleaseError + 'a {
    move |source| ReleaseError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ReleaseError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err("setting permissions of", path))
}

/// The relative path an entry names; `None` for the archive root itself.
fn sanitize(path: &Path) -> Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("the path contains `..`".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("the path is absolute".into());
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Create `dest/rel` and its parents as needed, refusing to pass through
/// anything but real directories.
fn make_dirs(dest: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = dest.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "it goes through the symlink {}",
                    cur.strip_prefix(dest).unwrap_or(&cur).display()
                ));
            }
            Ok(_) => {
                return Err(format!(
                    "it goes through the file {}",
                    cur.strip_prefix(dest).unwrap_or(&cur).display()
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(|e| format!("creating {}: {e}", cur.display()))?;
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("setting permissions of {}: {e}", cur.display()))?;
            }
            Err(e) => return Err(format!("reading {}: {e}", cur.display())),
        }
    }
    Ok(())
}

/// Check that no parent of `dest/rel` is a symlink (the leaf may be anything).
fn check_no_symlinks(dest: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = dest.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            if fs::symlink_metadata(&cur).is_ok_and(|m| !m.is_dir()) {
                return Err(format!(
                    "it goes through {}, which is not a directory",
                    cur.strip_prefix(dest).unwrap_or(&cur).display()
                ));
            }
        }
    }
    Ok(())
}

/// Make the parents of `dest/rel` and clear the way for a new file, symlink
/// or link there (a later entry replaces an earlier one, as with `tar -x`).
fn prepare_leaf(dest: &Path, rel: &Path) -> Result<(), String> {
    if let Some(parent) = rel.parent() {
        make_dirs(dest, parent)?;
    }
    let target = dest.join(rel);
    match fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => Err("it would replace a directory".into()),
        Ok(_) => {
            fs::remove_file(&target).map_err(|e| format!("replacing {}: {e}", target.display()))
        }
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    fn tarball(dir: &Path, build: impl FnOnce(&mut tar::Builder<GzEncoder<File>>)) -> PathBuf {
        let path = dir.join("r.tar.gz");
        let f = File::create(&path).unwrap();
        let mut b = tar::Builder::new(GzEncoder::new(f, Compression::fast()));
        build(&mut b);
        b.into_inner().unwrap().finish().unwrap();
        path
    }

    fn file_header(size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(mode);
        h.set_entry_type(EntryType::Regular);
        h
    }

    fn raw_name(h: &mut tar::Header, name: &str) {
        let n = &mut h.as_old_mut().name;
        n.fill(0);
        n[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
    }

    #[test]
    fn files_symlinks_hard_links_and_modes_are_extracted_as_they_were() {
        let tmp = tempfile::tempdir().unwrap();
        let tb = tarball(tmp.path(), |b| {
            let mut h = file_header(3, 0o755);
            b.append_data(&mut h, "bin/run", &b"abc"[..]).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "bin/alias", "run").unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, "bin/hard", "bin/run").unwrap();
        });
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        extract(&tb, &out).unwrap();
        let m = fs::metadata(out.join("bin/run")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o755);
        assert_eq!(
            fs::read_link(out.join("bin/alias")).unwrap(),
            Path::new("run")
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(out.join("bin/hard")).unwrap().ino(), m.ino());
    }

    #[test]
    fn entries_escaping_the_directory_are_refused() {
        for bad in ["../evil", "/etc/evil", "a/../../evil"] {
            let tmp = tempfile::tempdir().unwrap();
            let tb = tarball(tmp.path(), |b| {
                let mut h = file_header(1, 0o644);
                raw_name(&mut h, bad);
                b.append(&h, &b"x"[..]).unwrap();
            });
            let out = tmp.path().join("out");
            fs::create_dir(&out).unwrap();
            let err = extract(&tb, &out).unwrap_err();
            assert!(
                matches!(err, ReleaseError::UnsafeTarball { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn writing_through_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        fs::create_dir(&victim).unwrap();
        let tb = tarball(tmp.path(), |b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "lib", &victim).unwrap();
            let mut h = file_header(1, 0o644);
            b.append_data(&mut h, "lib/evil", &b"x"[..]).unwrap();
        });
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        let err = extract(&tb, &out).unwrap_err();
        assert!(matches!(err, ReleaseError::UnsafeTarball { .. }), "{err}");
        assert!(!victim.join("evil").exists());
    }

    #[test]
    fn a_truncated_tarball_is_reported_as_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let tb = tarball(tmp.path(), |b| {
            let data = vec![7u8; 100_000];
            let mut h = file_header(data.len() as u64, 0o644);
            b.append_data(&mut h, "big", &data[..]).unwrap();
        });
        let bytes = fs::read(&tb).unwrap();
        fs::write(&tb, &bytes[..bytes.len() - 10]).unwrap();
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        let err = extract(&tb, &out).unwrap_err();
        assert!(matches!(err, ReleaseError::CorruptTarball { .. }), "{err}");
    }
}
