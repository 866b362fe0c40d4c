//! Safe extraction of a release tarball (`mix release` with the `:tar` step):
//! no absolute paths, no `..`, nothing written through a symlink; symlinks
//! and hard links kept as such, permission bits set explicitly (umask-free).

use crate::error::io as io_err;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use tar::EntryType;

use super::ReleaseError;

/// Bounds on what a release tarball may extract to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtractLimits {
    /// File bytes (plus 512 per entry) the tarball may write to scratch;
    /// gzip allows ratios near 1000:1, so the tarball's own size says little.
    pub max_bytes: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_bytes: DEFAULT_MAX_EXTRACTED,
        }
    }
}

/// 8 GiB: ten times the biggest Phoenix release seen, far below what fills
/// a CI runner's disk by surprise.
pub const DEFAULT_MAX_EXTRACTED: u64 = 8 << 30;

/// What extraction had to change on the host side: files whose setuid or
/// setgid bits were dropped from the scratch copy (so no root-owned setuid
/// file lies around in scratch), with the mode the image must still give them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Extracted {
    /// Release-relative path → the mode in the tarball.
    pub special_modes: BTreeMap<PathBuf, u32>,
}

/// Extract the gzip tarball `tarball` into the (existing, empty) `dest`.
pub(crate) fn extract(
    tarball: &Path,
    dest: &Path,
    limits: ExtractLimits,
) -> Result<Extracted, ReleaseError> {
    let mut out = Extracted::default();
    let mut budget = limits.max_bytes;
    let too_large = || ReleaseError::TooLarge {
        path: tarball.to_owned(),
        limit: limits.max_bytes,
    };
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
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            continue;
        }
        budget = budget.checked_sub(512).ok_or_else(too_large)?;
        // A PAX sparse file (GNU tar --sparse --format=posix) carries its
        // real name and map in PAX keys; read as a plain entry it would land
        // as `GNUSparseFile.N/…` holding the map.
        let sparse = pax_sparse(&mut entry).map_err(corrupt)?;
        let raw_path = match &sparse {
            Some(sp) => sp.name.clone().unwrap_or(raw_path),
            None => raw_path,
        };
        let unsafe_entry = |reason: String| ReleaseError::UnsafeTarball {
            path: tarball.to_owned(),
            entry: raw_path.clone(),
            reason,
        };
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
            // tar expands old-GNU sparse entries ('S') as it reads them.
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mode = mode()?;
                prepare_leaf(dest, &rel).map_err(&unsafe_entry)?;
                let mut file = File::create(&target).map_err(io_err("creating", &target))?;
                match &sparse {
                    None => loop {
                        let n = match entry.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => return Err(corrupt(e)),
                        };
                        budget = budget.checked_sub(n as u64).ok_or_else(too_large)?;
                        file.write_all(&buf[..n])
                            .map_err(io_err("writing", &target))?;
                    },
                    Some(sp) => {
                        budget = budget.checked_sub(sp.real_size).ok_or_else(too_large)?;
                        write_pax_sparse(&mut entry, sp, &mut file, &mut buf).map_err(
                            |e| match e {
                                SparseError::Read(e) => corrupt(e),
                                SparseError::Write(e) => io_err("writing", &target)(e).into(),
                                SparseError::Bad(reason) => unsafe_entry(reason),
                            },
                        )?;
                    }
                }
                drop(file);
                if mode & 0o6000 != 0 {
                    // The image keeps the bits (they are in the layer's tar
                    // header); the host-side scratch copy never has them.
                    out.special_modes.insert(rel.clone(), mode);
                }
                set_mode(&target, mode & !0o6000)?;
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
        if mode & 0o6000 != 0 {
            if let Ok(rel) = dir.strip_prefix(dest) {
                out.special_modes.insert(rel.to_owned(), *mode);
            }
        }
        set_mode(dir, mode & !0o6000)?;
    }
    Ok(out)
}

/// A sparse file as PAX keys describe it (GNU formats 0.1 and 1.0).
#[derive(Debug)]
struct PaxSparse {
    /// `GNU.sparse.name`: the file's real path.
    name: Option<PathBuf>,
    /// `GNU.sparse.realsize` (or `.size`): its size with the holes.
    real_size: u64,
    /// Format 0.1: the map from `GNU.sparse.map`; `None` for 1.0, whose map
    /// opens the entry's data.
    map: Option<Vec<(u64, u64)>>,
}

/// The PAX sparse description of an entry, if it has one. Format 0.0
/// (repeated `offset`/`numbytes` keys) is refused: no tool in use writes it.
fn pax_sparse<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Option<PaxSparse>> {
    let Some(exts) = entry.pax_extensions()? else {
        return Ok(None);
    };
    let mut name = None;
    let mut real_size = None;
    let mut map = None;
    let mut major = None;
    let mut any = false;
    for ext in exts {
        let ext = ext?;
        let key = ext.key().unwrap_or("");
        if !key.starts_with("GNU.sparse.") {
            continue;
        }
        any = true;
        let value = ext.value().unwrap_or("");
        match key {
            "GNU.sparse.name" => name = Some(PathBuf::from(value)),
            "GNU.sparse.realsize" | "GNU.sparse.size" => real_size = value.parse::<u64>().ok(),
            "GNU.sparse.major" => major = Some(value.to_owned()),
            "GNU.sparse.map" => {
                let nums: Option<Vec<u64>> = value.split(',').map(|n| n.parse().ok()).collect();
                map = nums.map(|n| {
                    n.chunks(2)
                        .map(|c| (c[0], *c.get(1).unwrap_or(&0)))
                        .collect()
                });
            }
            _ => {}
        }
    }
    if !any {
        return Ok(None);
    }
    let bad = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("PAX sparse entry: {what}"),
        )
    };
    let real_size = real_size.ok_or_else(|| bad("no GNU.sparse.realsize"))?;
    match (major.as_deref(), &map) {
        (Some("1"), _) => map = None,
        (None, Some(_)) => {}
        _ => {
            return Err(bad(
                "format 0.0 or an unknown format (only 0.1 and 1.0 are supported)",
            ));
        }
    }
    Ok(Some(PaxSparse {
        name,
        real_size,
        map,
    }))
}

enum SparseError {
    Read(io::Error),
    Write(io::Error),
    Bad(String),
}

/// Write a PAX sparse entry's data chunks at their offsets, leaving holes.
fn write_pax_sparse<R: Read>(
    entry: &mut R,
    sp: &PaxSparse,
    file: &mut File,
    buf: &mut [u8],
) -> Result<(), SparseError> {
    use std::io::{Seek, SeekFrom};
    let mut consumed: u64 = 0;
    let map = match &sp.map {
        Some(m) => m.clone(),
        None => {
            // Format 1.0: decimal lines — the count, then offset and size of
            // each chunk — padded to a 512-byte block.
            let mut line = || -> Result<u64, SparseError> {
                let mut digits = Vec::new();
                loop {
                    let mut b = [0u8; 1];
                    entry.read_exact(&mut b).map_err(SparseError::Read)?;
                    consumed += 1;
                    if b[0] == b'\n' {
                        break;
                    }
                    if !b[0].is_ascii_digit() || digits.len() > 20 {
                        return Err(SparseError::Bad("a malformed PAX sparse map".into()));
                    }
                    digits.push(b[0]);
                }
                std::str::from_utf8(&digits)
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(|| SparseError::Bad("a malformed PAX sparse map".into()))
            };
            let count = line()?;
            if count > 1 << 20 {
                return Err(SparseError::Bad(
                    "a PAX sparse map with too many chunks".into(),
                ));
            }
            let mut m = Vec::with_capacity(count as usize);
            for _ in 0..count {
                m.push((line()?, line()?));
            }
            let pad = (512 - consumed % 512) % 512;
            io::copy(&mut entry.take(pad), &mut io::sink()).map_err(SparseError::Read)?;
            m
        }
    };
    for (offset, size) in map {
        if offset
            .checked_add(size)
            .is_none_or(|end| end > sp.real_size)
        {
            return Err(SparseError::Bad(
                "a PAX sparse chunk past the file's size".into(),
            ));
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(SparseError::Write)?;
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = entry.read(&mut buf[..want]).map_err(SparseError::Read)?;
            if n == 0 {
                return Err(SparseError::Read(io::ErrorKind::UnexpectedEof.into()));
            }
            file.write_all(&buf[..n]).map_err(SparseError::Write)?;
            left -= n as u64;
        }
    }
    file.set_len(sp.real_size).map_err(SparseError::Write)?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ReleaseError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err("setting permissions of", path))?;
    Ok(())
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
        extract(&tb, &out, ExtractLimits::default()).unwrap();
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
            let err = extract(&tb, &out, ExtractLimits::default()).unwrap_err();
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
        let err = extract(&tb, &out, ExtractLimits::default()).unwrap_err();
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
        let err = extract(&tb, &out, ExtractLimits::default()).unwrap_err();
        assert!(matches!(err, ReleaseError::CorruptTarball { .. }), "{err}");
    }

    /// A sparse file made by GNU tar in the given format (`gnu` for old-GNU
    /// sparse entries, `posix` with `--sparse-version`), 8 MiB with 3 bytes
    /// of data at 1 MiB and 2 bytes at the end.
    fn gnu_tar_sparse(dir: &Path, format: &str, version: Option<&str>) -> PathBuf {
        let src = dir.join("src");
        fs::create_dir_all(src.join("rel")).unwrap();
        let f = src.join("rel/holes.bin");
        let mut file = File::create(&f).unwrap();
        use std::io::{Seek, SeekFrom};
        file.seek(SeekFrom::Start(1 << 20)).unwrap();
        file.write_all(b"abc").unwrap();
        file.seek(SeekFrom::Start((8 << 20) - 2)).unwrap();
        file.write_all(b"yz").unwrap();
        drop(file);
        let tb = dir.join(format!("sparse-{format}-{}.tar.gz", version.unwrap_or("x")));
        let mut cmd = crate::process::command("tar");
        cmd.arg("-C")
            .arg(&src)
            .arg("--sparse")
            .arg(format!("--format={format}"));
        if let Some(v) = version {
            cmd.arg(format!("--sparse-version={v}"));
        }
        let st = cmd.arg("-czf").arg(&tb).arg("rel").status().unwrap();
        assert!(st.success(), "GNU tar is needed for this test");
        tb
    }

    fn expect_holes_file(out: &Path) {
        let bytes = fs::read(out.join("rel/holes.bin")).unwrap();
        assert_eq!(bytes.len(), 8 << 20);
        assert_eq!(&bytes[1 << 20..(1 << 20) + 3], b"abc");
        assert_eq!(&bytes[(8 << 20) - 2..], b"yz");
        assert!(bytes[..1 << 20].iter().all(|&b| b == 0));
        assert!(!out.join("rel/GNUSparseFile.0").exists());
    }

    #[test]
    fn sparse_entries_of_gnu_tar_are_expanded_not_dropped() {
        for (format, version) in [
            ("gnu", None),
            ("posix", Some("0.1")),
            ("posix", Some("1.0")),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let tb = gnu_tar_sparse(tmp.path(), format, version);
            let out = tmp.path().join("out");
            fs::create_dir(&out).unwrap();
            extract(&tb, &out, ExtractLimits::default())
                .unwrap_or_else(|e| panic!("{format} {version:?}: {e}"));
            expect_holes_file(&out);
        }
    }

    #[test]
    fn the_oldest_pax_sparse_format_is_refused_rather_than_misread() {
        let tmp = tempfile::tempdir().unwrap();
        let tb = gnu_tar_sparse(tmp.path(), "posix", Some("0.0"));
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        let err = extract(&tb, &out, ExtractLimits::default()).unwrap_err();
        assert!(err.to_string().contains("sparse"), "{err}");
    }

    #[test]
    fn extraction_stops_at_the_size_limit() {
        let tmp = tempfile::tempdir().unwrap();
        // 64 MiB of zeros: a ~64 KiB tarball.
        let tb = tarball(tmp.path(), |b| {
            let mut h = file_header(64 << 20, 0o644);
            b.append_data(&mut h, "zeros", io::repeat(0).take(64 << 20))
                .unwrap();
        });
        assert!(fs::metadata(&tb).unwrap().len() < 1 << 20);
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        let err = extract(
            &tb,
            &out,
            ExtractLimits {
                max_bytes: 16 << 20,
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, ReleaseError::TooLarge { limit, .. } if limit == 16 << 20),
            "{err}"
        );
        let written: u64 = fs::metadata(out.join("zeros"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(written <= 16 << 20, "wrote {written} bytes past the limit");
        extract(
            &tb,
            &tmp.path().join("ok").tap_mkdir(),
            ExtractLimits {
                max_bytes: 65 << 20,
            },
        )
        .unwrap();
    }

    trait TapMkdir {
        fn tap_mkdir(self) -> PathBuf;
    }
    impl TapMkdir for PathBuf {
        fn tap_mkdir(self) -> PathBuf {
            fs::create_dir_all(&self).unwrap();
            self
        }
    }

    #[test]
    fn setuid_bits_never_reach_the_scratch_copy_but_are_remembered() {
        let tmp = tempfile::tempdir().unwrap();
        let tb = tarball(tmp.path(), |b| {
            let mut h = file_header(2, 0o4755);
            b.append_data(&mut h, "bin/su", &b"#!"[..]).unwrap();
            let mut h = file_header(2, 0o2755);
            b.append_data(&mut h, "bin/sg", &b"#!"[..]).unwrap();
            let mut h = file_header(2, 0o755);
            b.append_data(&mut h, "bin/plain", &b"#!"[..]).unwrap();
        });
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        let got = extract(&tb, &out, ExtractLimits::default()).unwrap();
        for f in ["su", "sg", "plain"] {
            let m = fs::metadata(out.join("bin").join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o7777, 0o755, "{f}");
        }
        assert_eq!(got.special_modes.get(Path::new("bin/su")), Some(&0o4755));
        assert_eq!(got.special_modes.get(Path::new("bin/sg")), Some(&0o2755));
        assert!(!got.special_modes.contains_key(Path::new("bin/plain")));
    }
}
