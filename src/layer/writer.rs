//! The deterministic tar writer (sorted entries, fixed owner and mtime,
//! hard links, long names) and the metadata fingerprint of a plan.

#[allow(unused_imports)]
use super::*;
// ---------------------------------------------------------------------------
// tar

pub(super) enum TarError {
    Source(LayerError),
    Output(io::Error),
}

impl TarError {
    pub(super) fn into_layer_error(self, layer: &str) -> LayerError {
        match self {
            TarError::Source(e) => e,
            TarError::Output(e) => LayerError::Write {
                layer: layer.to_owned(),
                source: e,
            },
        }
    }
}

impl From<crate::error::IoError> for TarError {
    fn from(e: crate::error::IoError) -> Self {
        TarError::Source(LayerError::Io(e))
    }
}

impl From<LayerError> for TarError {
    fn from(e: LayerError) -> Self {
        TarError::Source(e)
    }
}

/// A fingerprint of what a layer would hold, equal only for layers whose
/// tars are equal, so its diff ID can be remembered instead of hashed again
/// (the idea of git's index). On disk it is taken from file metadata alone
/// (no contents read): paths, types, modes, sizes, link targets, and mtime,
/// ctime, inode and device, which change whenever a file is rewritten. A
/// spool's files have no such metadata: there it is their content, by the
/// sha256 each file got as it was spooled — `None` when a file has none
/// (only the diff ID itself can then say the layer is unchanged).
pub fn fingerprint(
    layer: &PlannedLayer,
    opts: &LayerOptions,
) -> Result<Option<Digest>, LayerError> {
    let mut h = Sha256Hasher::new();
    let disk = layer.tree().is_disk();
    // The tar format version and everything in the options that changes bytes.
    h.update(
        format!(
            "guildhall-image layer v1{} {:?} {} {} {} {}\n",
            if disk { "" } else { " content" },
            opts.codec,
            opts.block_size,
            opts.mtime,
            opts.uid,
            opts.gid
        )
        .as_bytes(),
    );
    let entries = layer
        .sorted()
        .into_iter()
        .map(|i| layer.entry(&layer.items[i as usize]));
    if disk {
        fingerprint_entries(&mut h, &Tree::Disk, entries)?;
    } else if !fingerprint_content(&mut h, layer.tree(), entries, false)? {
        return Ok(None);
    }
    Ok(Some(h.finish()))
}

/// A fingerprint (like [`fingerprint`]) of some entries of a plan read from
/// `tree`, in the order given: what preflight remembers it checked. For a
/// spool, whose entries have no stable metadata, it is the files' content
/// (read, where the spool did not take their sha256).
pub fn fingerprint_of<'a>(
    what: &str,
    tree: &Tree,
    entries: impl Iterator<Item = LayerEntry<'a>>,
) -> Result<Digest, LayerError> {
    let mut h = Sha256Hasher::new();
    h.update(what.as_bytes());
    h.update(b"\n");
    fingerprint_entries(&mut h, tree, entries)?;
    Ok(h.finish())
}

pub(super) fn fingerprint_entries<'a>(
    h: &mut Sha256Hasher,
    tree: &Tree,
    entries: impl Iterator<Item = LayerEntry<'a>>,
) -> Result<(), LayerError> {
    if !tree.is_disk() {
        return fingerprint_content(h, tree, entries, true).map(drop);
    }
    for e in entries {
        let m = fs::symlink_metadata(&e.source).map_err(io_err("reading", &e.source))?;
        h.update(e.dest.as_os_str().as_bytes());
        h.update(b"\0");
        h.update(e.source.as_os_str().as_bytes());
        h.update(
            format!(
                "\0{:o} {} {} {}.{} {}.{} {} {} {}\n",
                m.mode(),
                m.len(),
                m.nlink(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
                m.ino(),
                m.dev(),
                u8::from(m.file_type().is_symlink())
            )
            .as_bytes(),
        );
        if m.file_type().is_symlink() {
            let target = fs::read_link(&e.source).map_err(io_err("reading link", &e.source))?;
            h.update(target.as_os_str().as_bytes());
            h.update(b"\n");
        }
    }
    Ok(())
}

/// [`fingerprint_entries`] for a spool: paths, kinds, modes, link targets,
/// hard links as the tar writes them (to the first name of the file in
/// these entries), and every file's sha256 — as the spool knows it, else
/// read when `read` (`Ok(false)`, nothing read, when not).
fn fingerprint_content<'a>(
    h: &mut Sha256Hasher,
    tree: &Tree,
    entries: impl Iterator<Item = LayerEntry<'a>>,
    read: bool,
) -> Result<bool, LayerError> {
    let mut buf = Vec::new();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for e in entries {
        let m = tree
            .symlink_metadata(&e.source)
            .map_err(io_err("reading", &e.source))?;
        h.update(e.dest.as_os_str().as_bytes());
        h.update(format!("\0{:?} {:o} {}\n", m.kind, m.mode, m.len).as_bytes());
        if m.is_symlink() {
            let t = tree
                .read_link(&e.source)
                .map_err(io_err("reading link", &e.source))?;
            h.update(t.as_os_str().as_bytes());
            h.update(b"\n");
        } else if m.is_file() {
            if m.nlink > 1 {
                if let Some(first) = links.get(&m.id) {
                    h.update(b"link ");
                    h.update(first.as_os_str().as_bytes());
                    h.update(b"\n");
                    continue;
                }
                links.insert(m.id, e.dest.to_owned());
            }
            let known = tree
                .known_content(&e.source)
                .map_err(io_err("reading", &e.source))?;
            match known {
                Some(sha) => h.update(&sha),
                None if !read => return Ok(false),
                None => {
                    if buf.is_empty() {
                        buf = vec![0u8; READ_CHUNK];
                    }
                    let mut sha = Sha256Hasher::new();
                    let mut f = tree.open(&e.source).map_err(io_err("opening", &e.source))?;
                    loop {
                        match f.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => sha.update(&buf[..n]),
                            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                            Err(err) => return Err(io_err("reading", &e.source)(err).into()),
                        }
                    }
                    h.update(&sha.finish_bytes());
                }
            }
        }
    }
    Ok(true)
}

pub(super) fn write_tar<W: Write>(
    layer: &PlannedLayer,
    opts: &LayerOptions,
    out: &mut W,
) -> Result<usize, TarError> {
    let mut order = layer.sorted();
    order.dedup_by(|b, a| {
        let (x, y) = (
            layer.entry(&layer.items[*a as usize]),
            layer.entry(&layer.items[*b as usize]),
        );
        x.dest == y.dest && x.source == y.source
    });
    if let Some(w) = order.windows(2).find(|w| {
        layer.dest_bytes(&layer.items[w[0] as usize])
            == layer.dest_bytes(&layer.items[w[1] as usize])
    }) {
        let (x, y) = (
            layer.entry(&layer.items[w[0] as usize]),
            layer.entry(&layer.items[w[1] as usize]),
        );
        return Err(LayerError::Duplicate {
            layer: layer.name.clone(),
            dest: x.dest.to_owned(),
            first: x.source.into_owned(),
            second: y.source.into_owned(),
        }
        .into());
    }

    // Hard links: the dest of the first entry seen for each (dev, inode).
    let mut links: HashMap<(u64, u64), u32> = HashMap::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut entries = 0;
    let tree = layer.tree();
    for idx in order {
        let entry = layer.entry(&layer.items[idx as usize]);
        let src: &Path = &entry.source;
        let dest = entry.dest.as_os_str().as_bytes();
        let meta = tree.symlink_metadata(src).map_err(io_err("reading", src))?;
        let mode = meta.mode;
        if meta.is_dir() {
            let mut name = dest.to_vec();
            name.push(b'/');
            write_header(out, opts, EntryType::Directory, &name, None, mode, 0)?;
        } else if meta.is_symlink() {
            let target = tree.read_link(src).map_err(io_err("reading link", src))?;
            let target = target.as_os_str().as_bytes();
            write_header(out, opts, EntryType::Symlink, dest, Some(target), mode, 0)?;
        } else if meta.is_file() {
            let file = tree.open(src).map_err(io_err("opening", src))?;
            let meta = *file.meta();
            if !meta.is_file() {
                return Err(LayerError::Changed {
                    path: src.to_owned(),
                    expected: 0,
                    actual: "no longer a regular file".into(),
                }
                .into());
            }
            let mode = meta.mode;
            if meta.nlink > 1 {
                if let Some(first) = links.get(&meta.id) {
                    let first = layer.dest_bytes(&layer.items[*first as usize]);
                    write_header(out, opts, EntryType::Link, dest, Some(first), mode, 0)?;
                    entries += 1;
                    continue;
                }
                links.insert(meta.id, idx);
            }
            let size = meta.len;
            write_header(out, opts, EntryType::Regular, dest, None, mode, size)?;
            copy_exact(file, src, size, out, &mut buf)?;
            pad(out, size)?;
        } else {
            tracing::warn!(
                "skipping {}: not a file, directory or symlink",
                src.display()
            );
            continue;
        }
        entries += 1;
    }
    out.write_all(&[0u8; 2 * TAR_BLOCK])
        .map_err(TarError::Output)?;
    Ok(entries)
}

/// Copy exactly `size` bytes of `file` to `out`; a file that is shorter or
/// longer than that changed under us, and the tar would be corrupt.
pub(super) fn copy_exact<W: Write>(
    mut file: impl Read,
    path: &Path,
    size: u64,
    out: &mut W,
    buf: &mut [u8],
) -> Result<(), TarError> {
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(LayerError::Changed {
                    path: path.to_owned(),
                    expected: size,
                    actual: format!("it ended after {} bytes", size - left),
                }
                .into());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("reading", path)(e).into()),
        };
        out.write_all(&buf[..n]).map_err(TarError::Output)?;
        left -= n as u64;
    }
    let mut probe = [0u8; 1];
    loop {
        match file.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                return Err(LayerError::Changed {
                    path: path.to_owned(),
                    expected: size,
                    actual: "it grew".into(),
                }
                .into());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("reading", path)(e).into()),
        }
    }
}

pub(super) fn pad<W: Write>(out: &mut W, size: u64) -> Result<(), TarError> {
    let rem = (size % TAR_BLOCK as u64) as usize;
    if rem != 0 {
        out.write_all(&[0u8; TAR_BLOCK][..TAR_BLOCK - rem])
            .map_err(TarError::Output)?;
    }
    Ok(())
}

/// One GNU tar header (preceded by `././@LongLink` records when the name or
/// link target does not fit in 100 bytes). uname/gname stay empty: runtimes
/// use the numeric ids.
pub(super) fn write_header<W: Write>(
    out: &mut W,
    opts: &LayerOptions,
    kind: EntryType,
    name: &[u8],
    link: Option<&[u8]>,
    mode: u32,
    size: u64,
) -> Result<(), TarError> {
    if name.len() >= 100 {
        write_long_record(out, EntryType::GNULongName, name)?;
    }
    if let Some(link) = link.filter(|l| l.len() >= 100) {
        write_long_record(out, EntryType::GNULongLink, link)?;
    }
    let mut h = Header::new_gnu();
    {
        let old = h.as_old_mut();
        let n = name.len().min(old.name.len());
        old.name[..n].copy_from_slice(&name[..n]);
        if let Some(link) = link {
            let n = link.len().min(old.linkname.len());
            old.linkname[..n].copy_from_slice(&link[..n]);
        }
    }
    h.set_mode(mode);
    h.set_uid(opts.uid);
    h.set_gid(opts.gid);
    h.set_mtime(opts.mtime);
    h.set_size(size);
    h.set_entry_type(kind);
    h.set_cksum();
    out.write_all(h.as_bytes()).map_err(TarError::Output)
}

pub(super) fn write_long_record<W: Write>(
    out: &mut W,
    kind: EntryType,
    value: &[u8],
) -> Result<(), TarError> {
    let mut h = Header::new_gnu();
    let magic = b"././@LongLink";
    h.as_old_mut().name[..magic.len()].copy_from_slice(magic);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    let size = value.len() as u64 + 1;
    h.set_size(size);
    h.set_entry_type(kind);
    h.set_cksum();
    out.write_all(h.as_bytes()).map_err(TarError::Output)?;
    out.write_all(value).map_err(TarError::Output)?;
    out.write_all(&[0]).map_err(TarError::Output)?;
    pad(out, size)
}

/// The stats of the tar stream that went through `w`.
pub(super) fn stats_of<W: Write>(w: &DigestWriter<W>, entries: usize) -> LayerStats {
    LayerStats {
        diff_id: w.digest(),
        uncompressed_size: w.len(),
        entries,
    }
}
