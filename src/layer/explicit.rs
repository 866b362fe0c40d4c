//! Layers of entries described rather than read from the file system:
//! their owner, mode and bytes (a range of a larger file) are given — what
//! unpacked Debian packages need. Same sort order, header format and
//! parallel gzip as every other layer.

use super::gzip::compress;
#[allow(unused_imports)]
use super::*;
use std::fs::File;
use std::io::Read;
/// What an [`ExplicitEntry`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExplicitKind {
    /// A directory.
    Dir,
    /// A regular file: `size` bytes at `offset` of the file `source` (an
    /// unpacked archive, a staging file).
    File {
        /// The file holding the bytes.
        source: PathBuf,
        /// Where they start.
        offset: u64,
        /// How many.
        size: u64,
    },
    /// A symlink to this target.
    Symlink(PathBuf),
    /// A hard link to another entry of the layer (its `dest`), which must
    /// be a regular file that sorts before this one.
    HardLink(PathBuf),
}

/// An entry whose metadata is given, not read from a file on disk: what
/// unpacked packages need (their own owners and modes, bytes inside a
/// larger file). `mtime` still comes from [`LayerOptions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExplicitEntry {
    /// Path inside the layer, as for [`LayerEntry::dest`].
    pub dest: PathBuf,
    /// What it is.
    pub kind: ExplicitKind,
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
}

/// [`write_layer`] for explicit entries: sorted by path the same way,
/// same header format, same parallel gzip. Two entries with one path are
/// an error.
pub fn write_explicit_layer<W: Write + Send>(
    name: &str,
    entries: &[ExplicitEntry],
    opts: &LayerOptions,
    out: W,
    progress: Option<&Task>,
) -> Result<(LayerStats, W), LayerError> {
    opts.check()?;
    compress(name, opts, out, progress, |sink| {
        write_explicit_tar(name, entries, opts, sink)
    })
}

fn write_explicit_tar<W: Write>(
    layer: &str,
    entries: &[ExplicitEntry],
    opts: &LayerOptions,
    out: &mut W,
) -> Result<usize, TarError> {
    let mut sorted: Vec<&ExplicitEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| {
        a.dest
            .as_os_str()
            .as_bytes()
            .cmp(b.dest.as_os_str().as_bytes())
    });
    if let Some(w) = sorted.windows(2).find(|w| w[0].dest == w[1].dest) {
        return Err(LayerError::Duplicate {
            layer: layer.to_owned(),
            dest: w[0].dest.clone(),
            first: PathBuf::from(format!("{:?}", w[0].kind)),
            second: PathBuf::from(format!("{:?}", w[1].kind)),
        }
        .into());
    }
    let mut files: std::collections::HashSet<&Path> = std::collections::HashSet::new();
    let mut open: Option<(&Path, File)> = None;
    let mut buf = vec![0u8; READ_CHUNK];
    for e in &sorted {
        let o = LayerOptions {
            uid: e.uid,
            gid: e.gid,
            ..opts.clone()
        };
        let dest = e.dest.as_os_str().as_bytes();
        let mode = e.mode & 0o7777;
        match &e.kind {
            ExplicitKind::Dir => {
                let mut name = dest.to_vec();
                name.push(b'/');
                write_header(out, &o, EntryType::Directory, &name, None, mode, 0)?;
            }
            ExplicitKind::Symlink(t) => {
                let t = t.as_os_str().as_bytes();
                write_header(out, &o, EntryType::Symlink, dest, Some(t), mode, 0)?;
            }
            ExplicitKind::HardLink(t) => {
                if !files.contains(t.as_path()) {
                    return Err(LayerError::Options(format!(
                        "layer {layer}: hard link {} names {}, which is not an earlier file of the layer",
                        e.dest.display(),
                        t.display()
                    ))
                    .into());
                }
                let t = t.as_os_str().as_bytes();
                write_header(out, &o, EntryType::Link, dest, Some(t), mode, 0)?;
            }
            ExplicitKind::File {
                source,
                offset,
                size,
            } => {
                if open.as_ref().is_none_or(|(p, _)| *p != source.as_path()) {
                    let f = File::open(source).map_err(io_err("opening", source))?;
                    open = Some((source.as_path(), f));
                }
                let (_, f) = open.as_mut().expect("an open source");
                io::Seek::seek(f, io::SeekFrom::Start(*offset))
                    .map_err(io_err("reading", source))?;
                write_header(out, &o, EntryType::Regular, dest, None, mode, *size)?;
                let mut left = *size;
                while left > 0 {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = match f.read(&mut buf[..want]) {
                        Ok(0) => {
                            return Err(LayerError::Changed {
                                path: source.clone(),
                                expected: offset + size,
                                actual: format!("it ended at {}", offset + size - left),
                            }
                            .into());
                        }
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(io_err("reading", source)(e).into()),
                    };
                    out.write_all(&buf[..n]).map_err(TarError::Output)?;
                    left -= n as u64;
                }
                pad(out, *size)?;
                files.insert(e.dest.as_path());
            }
        }
    }
    out.write_all(&[0u8; 2 * TAR_BLOCK])
        .map_err(TarError::Output)?;
    Ok(sorted.len())
}
