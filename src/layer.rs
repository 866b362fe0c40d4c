//! Deterministic layers: sorted tar entries with fixed owner and mtimes,
//! hashed (diff ID) and gzip-compressed on all cores in one streaming pass.
//!
//! The gzip stream is made pigz-style: the tar stream is cut into fixed-size
//! blocks, each block is deflated on its own (primed with the previous
//! block's last 32 KiB as dictionary) and ends byte-aligned, so the output
//! depends only on the input, the level and the block size — never on the
//! number of threads or their timing.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use tar::{EntryType, Header};

use crate::image::{Digest, DigestWriter, Sha256Hasher};
use crate::progress::Task;

/// The owner of every entry: `nobody`, like `COPY --chown=nobody:root`.
pub const NOBODY_UID: u64 = 65534;
/// The mtime of every entry (1 s after the epoch, as jib does): a constant,
/// so an unchanged layer keeps its digest from build to build.
pub const FIXED_MTIME: u64 = 1;
/// Default size of the blocks compressed independently. Part of the output
/// format: changing it changes every layer digest.
pub const DEFAULT_BLOCK_SIZE: usize = 1 << 20;

const TAR_BLOCK: usize = 512;
const READ_CHUNK: usize = 256 * 1024;
const DICT_SIZE: usize = 32 * 1024;
/// gzip header: deflate, no flags, mtime 0, no extra flags, OS "unknown".
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// What went wrong building a layer, and with which file.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// Reading a source file, directory or link failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`reading`, `listing`, …).
        action: &'static str,
        /// The file on disk.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file changed size while it was being read.
    #[error(
        "{path} changed while the layer was being written (expected {expected} bytes, {actual})"
    )]
    Changed {
        /// The file on disk.
        path: PathBuf,
        /// Its size when the entry header was written.
        expected: u64,
        /// What was found instead.
        actual: String,
    },
    /// Two entries of one layer have the same path but different sources.
    #[error("layer {layer}: {dest} planned twice (from {first} and {second})")]
    Duplicate {
        /// The layer.
        layer: String,
        /// The path inside the layer.
        dest: PathBuf,
        /// One source.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
    /// Writing the compressed layer failed.
    #[error("writing layer {layer}: {source}")]
    Write {
        /// The layer.
        layer: String,
        /// The error of the output.
        #[source]
        source: io::Error,
    },
    /// The compressor failed (should not happen).
    #[error("compressing layer {layer}: {reason}")]
    Compress {
        /// The layer.
        layer: String,
        /// The compressor's complaint.
        reason: String,
    },
    /// Options out of range.
    #[error("invalid layer options: {0}")]
    Options(String),
}

/// One thing to put in a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerEntry {
    /// Path inside the layer: relative, `/`-separated, no trailing slash
    /// (`app/bin/guildhall`). Any bytes (non-UTF-8 names are kept).
    pub dest: PathBuf,
    /// The file, directory or symlink on disk (never followed). A directory
    /// entry adds the directory alone, not its contents.
    pub source: PathBuf,
}

/// The entries of one layer, in any order: they are sorted when written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlannedLayer {
    /// Short name: `erts`, `deps`, `assets`, `app`.
    pub name: String,
    /// What it holds, for humans and the image history.
    pub description: String,
    /// The entries.
    pub entries: Vec<LayerEntry>,
}

impl PlannedLayer {
    /// An empty layer.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> PlannedLayer {
        PlannedLayer {
            name: name.into(),
            description: description.into(),
            entries: Vec::new(),
        }
    }

    /// Add one entry (not recursive). `dest` is normalised: no leading or
    /// trailing `/`, no `.` components.
    pub fn add(&mut self, source: impl Into<PathBuf>, dest: impl Into<PathBuf>) {
        let dest: PathBuf = dest
            .into()
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect();
        self.entries.push(LayerEntry {
            dest,
            source: source.into(),
        });
    }

    /// Add `source` as `dest` and, when it is a directory (not a symlink to
    /// one), everything below it, except paths for which `skip(source_path)`
    /// says so (a skipped directory is skipped whole). Returns the bytes of
    /// regular files added.
    pub fn add_tree(
        &mut self,
        source: &Path,
        dest: &Path,
        skip: &dyn Fn(&Path) -> bool,
    ) -> Result<u64, LayerError> {
        if skip(source) {
            return Ok(0);
        }
        let meta = fs::symlink_metadata(source).map_err(io_err("reading", source))?;
        self.add(source, dest);
        if meta.file_type().is_file() {
            return Ok(meta.len());
        }
        if !meta.is_dir() {
            return Ok(0);
        }
        let mut total = 0;
        let mut children: Vec<_> = fs::read_dir(source)
            .map_err(io_err("listing", source))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err("listing", source))?;
        children.sort();
        for name in children {
            total += self.add_tree(&source.join(&name), &dest.join(&name), skip)?;
        }
        Ok(total)
    }
}

/// How layers are written. The defaults are what makes digests reproducible:
/// change any of them (but `threads`) and every layer digest changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerOptions {
    /// gzip level, 0–9 (default 6).
    pub level: u32,
    /// Compression threads; 0 = one per core. Does not change the output.
    pub threads: usize,
    /// Size of the independently compressed blocks (default 1 MiB).
    pub block_size: usize,
    /// mtime of every entry.
    pub mtime: u64,
    /// Owner of every entry.
    pub uid: u64,
    /// Group of every entry.
    pub gid: u64,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            level: 6,
            threads: 0,
            block_size: DEFAULT_BLOCK_SIZE,
            mtime: FIXED_MTIME,
            uid: NOBODY_UID,
            gid: 0,
        }
    }
}

impl LayerOptions {
    fn threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    fn check(&self) -> Result<(), LayerError> {
        if self.level > 9 {
            return Err(LayerError::Options(format!(
                "gzip level {} is not in 0-9",
                self.level
            )));
        }
        if self.block_size < 64 * 1024 || self.block_size > 1 << 30 {
            return Err(LayerError::Options(format!(
                "block size {} is not between 64 KiB and 1 GiB",
                self.block_size
            )));
        }
        Ok(())
    }
}

/// What a written layer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerStats {
    /// sha256 of the uncompressed tar (the image config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// Tar entries written (files, directories, links).
    pub entries: usize,
}

/// The diff ID alone (tar + sha256, no compression): cheap, used to find
/// unchanged layers already in the layout.
pub fn diff_id(layer: &PlannedLayer, opts: &LayerOptions) -> Result<LayerStats, LayerError> {
    opts.check()?;
    let mut tar = DigestWriter::new(io::sink());
    let entries = write_tar(layer, opts, &mut tar).map_err(|e| e.into_layer_error(&layer.name))?;
    Ok(stats_of(&tar, entries))
}

/// Tar → gzip → `out`, compressing on `opts.threads` threads with at most
/// two blocks per thread in flight. `progress` gets uncompressed byte
/// counts. Returns the stats and `out` (flushed).
pub fn write_layer<W: Write + Send>(
    layer: &PlannedLayer,
    opts: &LayerOptions,
    out: W,
    progress: Option<&Task>,
) -> Result<(LayerStats, W), LayerError> {
    opts.check()?;
    compress(&layer.name, opts, out, progress, |sink| {
        write_tar(layer, opts, sink)
    })
}

/// A tar stream made elsewhere (a docker-archive layer) → gzip → `out`, on
/// all cores and with the same bytes as [`write_layer`] would give for that
/// tar. `what` names the stream in errors. Returns the stats (`entries` is
/// 0: the stream is not parsed) and `out`.
pub fn compress_tar_stream<R: Read, W: Write + Send>(
    what: &str,
    mut input: R,
    opts: &LayerOptions,
    out: W,
    progress: Option<&Task>,
) -> Result<(LayerStats, W), LayerError> {
    opts.check()?;
    compress(what, opts, out, progress, |sink| {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => return Ok(0),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(TarError::Source(LayerError::Io {
                        action: "reading",
                        path: PathBuf::from(what),
                        source,
                    }));
                }
            };
            sink.write_all(&buf[..n]).map_err(TarError::Output)?;
        }
    })
}

/// The parallel gzip pipeline around `produce`, which writes the tar
/// stream into the sink and returns its entry count.
fn compress<W, F>(
    name: &str,
    opts: &LayerOptions,
    out: W,
    progress: Option<&Task>,
    produce: F,
) -> Result<(LayerStats, W), LayerError>
where
    W: Write + Send,
    F: FnOnce(&mut DigestWriter<BlockSink<'_>>) -> Result<usize, TarError>,
{
    let threads = opts.threads();
    let in_flight = 2 * threads;
    let level = Compression::new(opts.level);
    std::thread::scope(|scope| {
        let (work_tx, work_rx) = mpsc::sync_channel::<Block>(in_flight);
        let (done_tx, done_rx) = mpsc::sync_channel::<Result<Block, String>>(in_flight);
        let (free_tx, free_rx) = mpsc::sync_channel::<Block>(in_flight);
        // Workers own the receiver (no clone kept here) so that, once they
        // stop, a blocked producer sees a closed channel instead of hanging.
        let work_rx = Arc::new(Mutex::new(work_rx));
        for _ in 0..threads {
            let rx = Arc::clone(&work_rx);
            let tx = done_tx.clone();
            scope.spawn(move || compress_worker(level, &rx, &tx));
        }
        drop(work_rx);
        drop(done_tx);
        let writer = scope.spawn(move || ordered_writer(out, done_rx, free_tx));

        let mut sink = DigestWriter::new(BlockSink {
            work_tx,
            free_rx,
            allocated: 0,
            capacity: in_flight,
            block_size: opts.block_size,
            current: None,
            seq: 0,
            tail: Vec::with_capacity(DICT_SIZE),
            progress,
        });
        let produced = produce(&mut sink).and_then(|entries| {
            sink.get_mut().finish().map_err(TarError::Output)?;
            Ok(entries)
        });
        let stats = produced
            .as_ref()
            .ok()
            .map(|&entries| stats_of(&sink, entries));
        drop(sink);
        let written = writer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        match (produced, written) {
            // A read error is the cause; the writer then only saw a short stream.
            (Err(e @ TarError::Source(_)), _) => Err(e.into_layer_error(name)),
            (_, Err(WriterError::Output(e))) => Err(LayerError::Write {
                layer: name.to_owned(),
                source: e,
            }),
            (_, Err(WriterError::Compress(reason))) => Err(LayerError::Compress {
                layer: name.to_owned(),
                reason,
            }),
            (_, Err(WriterError::Incomplete)) | (Err(_), Ok(_)) => Err(LayerError::Compress {
                layer: name.to_owned(),
                reason: "the compression pipeline stopped early".into(),
            }),
            (Ok(_), Ok(out)) => Ok((stats.expect("stats of a finished tar"), out)),
        }
    })
}

// ---------------------------------------------------------------------------
// tar

enum TarError {
    Source(LayerError),
    Output(io::Error),
}

impl TarError {
    fn into_layer_error(self, layer: &str) -> LayerError {
        match self {
            TarError::Source(e) => e,
            TarError::Output(e) => LayerError::Write {
                layer: layer.to_owned(),
                source: e,
            },
        }
    }
}

impl From<LayerError> for TarError {
    fn from(e: LayerError) -> Self {
        TarError::Source(e)
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LayerError + 'a {
    move |source| LayerError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Write the layer as a tar stream; returns the number of entries.
/// A fingerprint of what a layer would hold, from file metadata alone (no
/// contents read): paths, types, modes, sizes, link targets, and mtime,
/// ctime, inode and device, which change whenever a file is rewritten. Equal
/// fingerprints on one machine mean an equal tar, so its diff ID can be
/// remembered instead of hashed again (the idea of git's index).
pub fn fingerprint(layer: &PlannedLayer, opts: &LayerOptions) -> Result<Digest, LayerError> {
    let mut h = Sha256Hasher::new();
    // The tar format version and everything in the options that changes bytes.
    h.update(
        format!(
            "guildhall-image layer v1 {} {} {} {} {}\n",
            opts.level, opts.block_size, opts.mtime, opts.uid, opts.gid
        )
        .as_bytes(),
    );
    let mut sorted: Vec<&LayerEntry> = layer.entries.iter().collect();
    sorted.sort_by(|a, b| {
        a.dest
            .as_os_str()
            .as_bytes()
            .cmp(b.dest.as_os_str().as_bytes())
    });
    for e in sorted {
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
    Ok(h.finish())
}

fn write_tar<W: Write>(
    layer: &PlannedLayer,
    opts: &LayerOptions,
    out: &mut W,
) -> Result<usize, TarError> {
    let mut sorted: Vec<&LayerEntry> = layer.entries.iter().collect();
    sorted.sort_by(|a, b| {
        a.dest
            .as_os_str()
            .as_bytes()
            .cmp(b.dest.as_os_str().as_bytes())
    });
    sorted.dedup_by(|b, a| a.dest == b.dest && a.source == b.source);
    if let Some(w) = sorted.windows(2).find(|w| w[0].dest == w[1].dest) {
        return Err(LayerError::Duplicate {
            layer: layer.name.clone(),
            dest: w[0].dest.clone(),
            first: w[0].source.clone(),
            second: w[1].source.clone(),
        }
        .into());
    }

    let mut links: HashMap<(u64, u64), &Path> = HashMap::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut entries = 0;
    for entry in sorted {
        let src = &entry.source;
        let dest = entry.dest.as_os_str().as_bytes();
        let meta = fs::symlink_metadata(src).map_err(io_err("reading", src))?;
        let ft = meta.file_type();
        let mode = meta.mode() & 0o7777;
        if ft.is_dir() {
            let mut name = dest.to_vec();
            name.push(b'/');
            write_header(out, opts, EntryType::Directory, &name, None, mode, 0)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(src).map_err(io_err("reading link", src))?;
            let target = target.as_os_str().as_bytes();
            write_header(out, opts, EntryType::Symlink, dest, Some(target), mode, 0)?;
        } else if ft.is_file() {
            let file = File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(src)
                .map_err(io_err("opening", src))?;
            let meta = file.metadata().map_err(io_err("reading", src))?;
            if !meta.is_file() {
                return Err(LayerError::Changed {
                    path: src.clone(),
                    expected: 0,
                    actual: "no longer a regular file".into(),
                }
                .into());
            }
            let mode = meta.mode() & 0o7777;
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    let first = first.as_os_str().as_bytes();
                    write_header(out, opts, EntryType::Link, dest, Some(first), mode, 0)?;
                    entries += 1;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), &entry.dest);
            }
            let size = meta.len();
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
fn copy_exact<W: Write>(
    mut file: File,
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

fn pad<W: Write>(out: &mut W, size: u64) -> Result<(), TarError> {
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
fn write_header<W: Write>(
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

fn write_long_record<W: Write>(out: &mut W, kind: EntryType, value: &[u8]) -> Result<(), TarError> {
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
fn stats_of<W: Write>(w: &DigestWriter<W>, entries: usize) -> LayerStats {
    LayerStats {
        diff_id: w.digest(),
        uncompressed_size: w.len(),
        entries,
    }
}

// ---------------------------------------------------------------------------
// entries described rather than read from the file system

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

// ---------------------------------------------------------------------------
// parallel gzip

/// A block of the tar stream and its compressed form; recycled through the
/// pipeline so at most `capacity` blocks ever exist.
#[derive(Default)]
struct Block {
    seq: u64,
    last: bool,
    /// The previous block's last 32 KiB (empty for the first block).
    dict: Vec<u8>,
    input: Vec<u8>,
    output: Vec<u8>,
    crc: Crc,
}

/// The producer end: cuts the tar stream into blocks for the workers.
struct BlockSink<'a> {
    work_tx: SyncSender<Block>,
    free_rx: Receiver<Block>,
    allocated: usize,
    capacity: usize,
    block_size: usize,
    current: Option<Block>,
    seq: u64,
    tail: Vec<u8>,
    progress: Option<&'a Task>,
}

fn pipeline_stopped() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the compression pipeline stopped",
    )
}

impl BlockSink<'_> {
    /// A free block: a recycled one, a new one while under capacity, else
    /// wait for the writer to hand one back.
    fn free_block(&mut self) -> io::Result<Block> {
        match self.free_rx.try_recv() {
            Ok(b) => return Ok(b),
            Err(TryRecvError::Disconnected) => return Err(pipeline_stopped()),
            Err(TryRecvError::Empty) => {}
        }
        if self.allocated < self.capacity {
            self.allocated += 1;
            return Ok(Block {
                input: Vec::with_capacity(self.block_size),
                ..Block::default()
            });
        }
        self.free_rx.recv().map_err(|_| pipeline_stopped())
    }

    fn send(&mut self, last: bool) -> io::Result<()> {
        let mut b = match self.current.take() {
            Some(b) => b,
            None => self.free_block()?,
        };
        b.seq = self.seq;
        b.last = last;
        self.seq += 1;
        b.dict.clear();
        b.dict.extend_from_slice(&self.tail);
        let keep = b.input.len().min(DICT_SIZE);
        self.tail.clear();
        self.tail
            .extend_from_slice(&b.input[b.input.len() - keep..]);
        if let Some(p) = self.progress {
            p.inc(b.input.len() as u64);
        }
        self.work_tx.send(b).map_err(|_| pipeline_stopped())
    }

    /// Send what is left as the final block.
    fn finish(&mut self) -> io::Result<()> {
        self.send(true)
    }
}

impl Write for BlockSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self
            .current
            .as_ref()
            .is_some_and(|b| b.input.len() >= self.block_size)
        {
            // Only sent once more data comes, so the last block is never empty
            // unless the whole stream is.
            self.send(false)?;
        }
        if self.current.is_none() {
            self.current = Some(self.free_block()?);
        }
        let b = self.current.as_mut().expect("a current block");
        let n = buf.len().min(self.block_size - b.input.len());
        b.input.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn compress_worker(
    level: Compression,
    work: &Mutex<Receiver<Block>>,
    done: &SyncSender<Result<Block, String>>,
) {
    let mut c = Compress::new(level, false);
    let mut stored = Compress::new(Compression::none(), false);
    loop {
        let next = work.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(mut block) = next else { return };
        // Already-compressed data (images, fonts, phx.digest's .gz copies)
        // only costs time to deflate again: store it. The choice depends on
        // the block's bytes alone, so the output stays deterministic.
        let compressor = if looks_incompressible(&block.input) {
            &mut stored
        } else {
            &mut c
        };
        let res = compress_block(compressor, &mut block).map(|()| block);
        if done.send(res).is_err() {
            return;
        }
    }
}

/// Whether a block's bytes are so evenly spread (Shannon entropy of the byte
/// histogram above 7.97 bits per byte) that deflate cannot shrink it: the
/// signature of compressed or encrypted data. Text, code and BEAM files are
/// far below (typically 4.5–6.5).
fn looks_incompressible(bytes: &[u8]) -> bool {
    if bytes.len() < 64 * 1024 {
        return false;
    }
    let mut counts = [0u64; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    entropy > 7.97
}

/// Raw deflate of one block: primed with the dictionary, ending with a
/// sync flush (byte-aligned, not final) or, for the last block, a finish.
fn compress_block(c: &mut Compress, b: &mut Block) -> Result<(), String> {
    c.reset();
    if !b.dict.is_empty() {
        c.set_dictionary(&b.dict).map_err(|e| e.to_string())?;
    }
    b.crc.reset();
    b.crc.update(&b.input);
    b.output.clear();
    b.output.reserve(b.input.len() + b.input.len() / 16 + 1024);
    let flush = if b.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut consumed = 0;
    loop {
        let before = c.total_in();
        let status = c
            .compress_vec(&b.input[consumed..], &mut b.output, flush)
            .map_err(|e| e.to_string())?;
        consumed += (c.total_in() - before) as usize;
        let done = if b.last {
            status == Status::StreamEnd
        } else {
            consumed == b.input.len() && b.output.len() < b.output.capacity()
        };
        if done {
            return Ok(());
        }
        b.output.reserve(64 * 1024);
    }
}

enum WriterError {
    Output(io::Error),
    Compress(String),
    Incomplete,
}

/// Writes the gzip member: header, blocks in order, trailer (combined CRC32
/// and size). Hands each block back to the producer once written.
fn ordered_writer<W: Write>(
    mut out: W,
    done: Receiver<Result<Block, String>>,
    free: SyncSender<Block>,
) -> Result<W, WriterError> {
    out.write_all(&GZIP_HEADER).map_err(WriterError::Output)?;
    let mut pending: BTreeMap<u64, Block> = BTreeMap::new();
    let mut next = 0u64;
    let mut crc = Crc::new();
    let mut size = 0u64;
    let mut finished = false;
    for res in done {
        let block = res.map_err(WriterError::Compress)?;
        pending.insert(block.seq, block);
        while let Some(mut b) = pending.remove(&next) {
            out.write_all(&b.output).map_err(WriterError::Output)?;
            crc.combine(&b.crc);
            size += b.input.len() as u64;
            finished |= b.last;
            next += 1;
            b.input.clear();
            b.output.clear();
            // The producer may be done and gone; then the block is dropped.
            let _ = free.try_send(b);
        }
    }
    if !finished {
        return Err(WriterError::Incomplete);
    }
    out.write_all(&crc.sum().to_le_bytes())
        .map_err(WriterError::Output)?;
    out.write_all(&(size as u32).to_le_bytes())
        .map_err(WriterError::Output)?;
    out.flush().map_err(WriterError::Output)?;
    Ok(out)
}

#[cfg(test)]
mod tests {

    #[test]
    fn compressed_looking_blocks_are_stored_and_text_is_deflated() {
        // A deterministic pseudo-random block (xorshift) looks incompressible.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let random: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(super::looks_incompressible(&random));
        let text =
            b"defmodule Guildhall.Greeting do\n  def hello, do: :world\nend\n".repeat(20_000);
        assert!(!super::looks_incompressible(&text));
    }

    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    use flate2::read::GzDecoder;

    fn write(path: &Path, bytes: impl AsRef<[u8]>, mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    const LONG_DIR: &str = "some/very/long/nested/directory/names/that/exceed/the/ustar/limits";
    const LONG_FILE: &str = "a-file-name-that-is-longer-than-one-hundred-bytes-on-its-own-so-tar-needs-a-gnu-long-name-record.txt";

    /// A small release-like tree with every kind of entry the layers meet.
    fn sample_tree(root: &Path) {
        write(&root.join("bin/start"), "#!/bin/sh\nexec true\n", 0o755);
        write(
            &root.join("lib/app-1.0/ebin/app.beam"),
            vec![7u8; 3000],
            0o644,
        );
        write(
            &root.join("lib/app-1.0/priv/café-ünïcödé.txt"),
            "héllo",
            0o644,
        );
        write(
            &root.join("lib/app-1.0/priv").join(LONG_DIR).join(LONG_FILE),
            "long",
            0o600,
        );
        std::os::unix::fs::symlink("café-ünïcödé.txt", root.join("lib/app-1.0/priv/latest.txt"))
            .unwrap();
        let long_target = format!("{LONG_DIR}/{LONG_FILE}");
        std::os::unix::fs::symlink(&long_target, root.join("lib/app-1.0/priv/long-link")).unwrap();
        fs::hard_link(root.join("bin/start"), root.join("bin/start-again")).unwrap();
        // Incompressible-ish bytes, so the stream spans several blocks.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        write(
            &root.join("lib/app-1.0/priv/static/noise.bin"),
            noise,
            0o644,
        );
    }

    fn plan_of(root: &Path) -> PlannedLayer {
        let mut l = PlannedLayer::new("test", "a test layer");
        l.add_tree(root, Path::new("app"), &|_| false).unwrap();
        l
    }

    fn small_blocks(threads: usize) -> LayerOptions {
        LayerOptions {
            threads,
            block_size: 64 * 1024,
            ..LayerOptions::default()
        }
    }

    fn gz(layer: &PlannedLayer, opts: &LayerOptions) -> (LayerStats, Vec<u8>) {
        write_layer(layer, opts, Vec::new(), None).unwrap()
    }

    #[test]
    fn a_tar_stream_made_elsewhere_compresses_to_the_same_bytes_as_the_layer() {
        let dir = tempfile::tempdir().unwrap();
        sample_tree(dir.path());
        let layer = plan_of(dir.path());
        let opts = small_blocks(2);
        let (stats, direct) = gz(&layer, &opts);
        let mut tar = Vec::new();
        assert!(write_tar(&layer, &opts, &mut tar).is_ok());
        let (streamed, bytes) =
            compress_tar_stream("a stream", tar.as_slice(), &opts, Vec::new(), None).unwrap();
        assert_eq!(bytes, direct);
        assert_eq!(
            (streamed.diff_id, streamed.uncompressed_size),
            (stats.diff_id, stats.uncompressed_size)
        );
    }

    struct Back {
        path: Vec<u8>,
        kind: EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        link: Option<Vec<u8>>,
        data: Vec<u8>,
    }

    fn read_back(gzip: &[u8]) -> Vec<Back> {
        let mut ar = tar::Archive::new(GzDecoder::new(gzip));
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                let h = e.header();
                Back {
                    path: e.path_bytes().into_owned(),
                    kind: h.entry_type(),
                    mode: h.mode().unwrap(),
                    uid: h.uid().unwrap(),
                    gid: h.gid().unwrap(),
                    mtime: h.mtime().unwrap(),
                    link: e.link_name_bytes().map(|l| l.into_owned()),
                    data,
                }
            })
            .collect()
    }

    #[test]
    fn the_same_tree_gives_the_same_bytes_twice_and_from_a_copy_elsewhere_with_other_mtimes() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        sample_tree(&a);
        let opts = small_blocks(2);
        let (stats1, bytes1) = gz(&plan_of(&a), &opts);
        let (stats2, bytes2) = gz(&plan_of(&a), &opts);
        assert_eq!(bytes1, bytes2);
        assert_eq!(stats1, stats2);

        let b = tmp.path().join("elsewhere/b");
        fs::create_dir_all(b.parent().unwrap()).unwrap();
        let cp = Command::new("cp")
            .arg("-a")
            .arg(&a)
            .arg(&b)
            .status()
            .unwrap();
        assert!(cp.success());
        let touch = Command::new("find")
            .arg(&b)
            .args(["-exec", "touch", "-h", "-d", "@1234567890", "{}", "+"])
            .status()
            .unwrap();
        assert!(touch.success());
        let (stats3, bytes3) = gz(&plan_of(&b), &opts);
        assert_eq!(stats3, stats1);
        assert_eq!(bytes3, bytes1);
        assert_eq!(diff_id(&plan_of(&b), &opts).unwrap(), stats1);
    }

    #[test]
    fn one_two_and_three_threads_write_identical_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        sample_tree(tmp.path());
        let layer = plan_of(tmp.path());
        let (s1, one) = gz(&layer, &small_blocks(1));
        let (s2, two) = gz(&layer, &small_blocks(2));
        let (s3, three) = gz(&layer, &small_blocks(3));
        assert!(s1.uncompressed_size > 4 * 64 * 1024, "several blocks");
        assert_eq!(one, two);
        assert_eq!(one, three);
        assert_eq!((&s1, &s1), (&s2, &s3));
    }

    #[test]
    fn entries_come_back_sorted_with_fixed_owner_and_mtime_and_their_modes_links_and_names() {
        let tmp = tempfile::tempdir().unwrap();
        sample_tree(tmp.path());
        let (stats, bytes) = gz(&plan_of(tmp.path()), &small_blocks(2));
        let entries = read_back(&bytes);
        assert_eq!(entries.len(), stats.entries);
        let paths: Vec<&[u8]> = entries.iter().map(|e| e.path.as_slice()).collect();
        let mut sorted = paths.clone();
        sorted.sort_by(|a, b| {
            a.strip_suffix(b"/")
                .unwrap_or(a)
                .cmp(b.strip_suffix(b"/").unwrap_or(b))
        });
        assert_eq!(paths, sorted);
        assert!(
            entries
                .iter()
                .all(|e| e.uid == NOBODY_UID && e.gid == 0 && e.mtime == 1)
        );
        let find = |p: &str| {
            entries
                .iter()
                .find(|e| e.path == p.as_bytes())
                .unwrap_or_else(|| panic!("{p} not in the layer"))
        };
        assert_eq!(find("app/").kind, EntryType::Directory);
        assert_eq!(find("app/lib/app-1.0/priv/").kind, EntryType::Directory);
        let start = find("app/bin/start");
        assert_eq!((start.kind, start.mode), (EntryType::Regular, 0o755));
        assert_eq!(start.data, b"#!/bin/sh\nexec true\n");
        let again = find("app/bin/start-again");
        assert_eq!(again.kind, EntryType::Link);
        assert_eq!(again.link.as_deref(), Some(&b"app/bin/start"[..]));
        let uni = find("app/lib/app-1.0/priv/café-ünïcödé.txt");
        assert_eq!((uni.mode, uni.data.as_slice()), (0o644, "héllo".as_bytes()));
        let latest = find("app/lib/app-1.0/priv/latest.txt");
        assert_eq!(latest.kind, EntryType::Symlink);
        assert_eq!(latest.link.as_deref(), Some("café-ünïcödé.txt".as_bytes()));
        let long = find(&format!("app/lib/app-1.0/priv/{LONG_DIR}/{LONG_FILE}"));
        assert_eq!((long.mode, long.data.as_slice()), (0o600, &b"long"[..]));
        let long_link = find("app/lib/app-1.0/priv/long-link");
        assert_eq!(
            long_link.link.as_deref(),
            Some(format!("{LONG_DIR}/{LONG_FILE}").as_bytes())
        );
    }

    #[test]
    fn the_gzip_stream_decompresses_with_a_valid_crc_to_the_tar_the_diff_id_names() {
        let tmp = tempfile::tempdir().unwrap();
        sample_tree(tmp.path());
        let layer = plan_of(tmp.path());
        let (stats, bytes) = gz(&layer, &small_blocks(2));
        assert_eq!(&bytes[..10], &GZIP_HEADER);
        let mut tar = Vec::new();
        // GzDecoder checks the CRC32 and ISIZE of the trailer.
        GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(tar.len() as u64, stats.uncompressed_size);
        assert_eq!(Digest::of(&tar), stats.diff_id);
        assert_eq!(diff_id(&layer, &small_blocks(2)).unwrap(), stats);

        let mut corrupt = bytes.clone();
        let n = corrupt.len();
        corrupt[n - 8] ^= 1;
        assert!(
            GzDecoder::new(corrupt.as_slice())
                .read_to_end(&mut Vec::new())
                .is_err()
        );
    }

    #[test]
    fn gnu_tar_and_gzip_read_the_layer() {
        let tmp = tempfile::tempdir().unwrap();
        sample_tree(&tmp.path().join("tree"));
        let (_, bytes) = gz(&plan_of(&tmp.path().join("tree")), &small_blocks(2));
        let file = tmp.path().join("layer.tar.gz");
        fs::write(&file, &bytes).unwrap();
        let Ok(t) = Command::new("gzip").arg("-t").arg(&file).status() else {
            return;
        };
        assert!(t.success());
        let out = Command::new("tar")
            .arg("-tvzf")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains(LONG_FILE), "{listing}");
        assert!(
            listing.contains("app/bin/start-again link to app/bin/start"),
            "{listing}"
        );
        assert!(listing.contains("65534/0"), "{listing}");
        let x = tmp.path().join("x");
        fs::create_dir(&x).unwrap();
        let st = Command::new("tar")
            .arg("-xzf")
            .arg(&file)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(
            fs::read(x.join("app/lib/app-1.0/priv/latest.txt")).unwrap(),
            "héllo".as_bytes()
        );
    }

    #[test]
    fn a_tar_stream_of_exactly_whole_blocks_still_ends_properly() {
        let tmp = tempfile::tempdir().unwrap();
        // 512 header + data + 1024 end = exactly two 64 KiB blocks.
        let f = tmp.path().join("f");
        write(&f, vec![1u8; 2 * 65536 - 1536], 0o644);
        let mut layer = PlannedLayer::new("t", "t");
        layer.add(&f, "f");
        let (stats, bytes) = gz(&layer, &small_blocks(2));
        assert_eq!(stats.uncompressed_size, 2 * 65536);
        let mut tar = Vec::new();
        GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(tar.len(), 2 * 65536);
    }

    #[test]
    fn an_empty_layer_is_a_valid_gzip_of_an_empty_tar() {
        let (stats, bytes) = gz(&PlannedLayer::new("e", "e"), &LayerOptions::default());
        assert_eq!((stats.entries, stats.uncompressed_size), (0, 1024));
        let mut tar = Vec::new();
        GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(tar, vec![0u8; 1024]);
    }

    #[test]
    fn a_file_that_grows_or_shrinks_while_read_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, vec![0u8; 1000]).unwrap();
        let mut buf = vec![0u8; 64];
        for claimed in [999, 1001] {
            let res = copy_exact(
                File::open(&f).unwrap(),
                &f,
                claimed,
                &mut Vec::new(),
                &mut buf,
            );
            match res {
                Err(TarError::Source(LayerError::Changed { path, .. })) => assert_eq!(path, f),
                _ => panic!("a size of {claimed} was not caught"),
            }
        }
    }

    #[test]
    fn a_missing_source_names_its_path_and_duplicates_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut layer = PlannedLayer::new("t", "t");
        layer.add(tmp.path().join("gone"), "gone");
        match write_layer(&layer, &LayerOptions::default(), Vec::new(), None) {
            Err(LayerError::Io { path, .. }) => assert_eq!(path, tmp.path().join("gone")),
            other => panic!("{:?}", other.map(|r| r.0)),
        }
        let mut layer = PlannedLayer::new("t", "t");
        layer.add(tmp.path(), "d");
        layer.add(tmp.path(), "d");
        assert!(diff_id(&layer, &LayerOptions::default()).is_ok());
        layer.add(tmp.path().join("other"), "d");
        assert!(matches!(
            diff_id(&layer, &LayerOptions::default()),
            Err(LayerError::Duplicate { .. })
        ));
    }

    struct FailingWriter(usize);
    impl Write for FailingWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0 < buf.len() {
                return Err(io::Error::other("disk full"));
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_output_that_fails_stops_the_pipeline_with_a_write_error() {
        let tmp = tempfile::tempdir().unwrap();
        sample_tree(tmp.path());
        let res = write_layer(
            &plan_of(tmp.path()),
            &small_blocks(2),
            FailingWriter(20_000),
            None,
        );
        assert!(
            matches!(res, Err(LayerError::Write { .. })),
            "{:?}",
            res.map(|r| r.0)
        );
    }

    fn vm_hwm_kib() -> u64 {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn a_200_mb_layer_is_written_in_bounded_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let big = tmp.path().join("big.bin");
        File::create(&big).unwrap().set_len(200 << 20).unwrap(); // sparse
        let mut layer = PlannedLayer::new("big", "big");
        layer.add(&big, "big.bin");
        let before = vm_hwm_kib();
        let (stats, _) = write_layer(&layer, &LayerOptions::default(), io::sink(), None).unwrap();
        let grown_mib = (vm_hwm_kib() - before) / 1024;
        assert!(stats.uncompressed_size > 200 << 20);
        // Blocks in flight: 2 per thread, ~2 MiB each. Other tests share the
        // process, so allow slack, but far below the layer's 200 MB.
        assert!(grown_mib < 64, "peak memory grew by {grown_mib} MiB");
    }

    #[test]
    fn explicit_entries_keep_their_owners_modes_and_byte_ranges_sorted_like_any_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let blob = tmp.path().join("blob");
        fs::write(&blob, b"xxHELLOyyWORLD").unwrap();
        let file = |dest: &str, offset, size, mode, uid, gid| ExplicitEntry {
            dest: dest.into(),
            kind: ExplicitKind::File {
                source: blob.clone(),
                offset,
                size,
            },
            mode,
            uid,
            gid,
        };
        let entries = vec![
            file("usr/bin/b", 9, 5, 0o4755, 0, 0),
            ExplicitEntry {
                dest: "usr/bin/c".into(),
                kind: ExplicitKind::HardLink("usr/bin/b".into()),
                mode: 0o4755,
                uid: 0,
                gid: 0,
            },
            file("usr/bin/a", 2, 5, 0o644, 0, 43),
            ExplicitEntry {
                dest: "usr".into(),
                kind: ExplicitKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
            ExplicitEntry {
                dest: "bin".into(),
                kind: ExplicitKind::Symlink("usr/bin".into()),
                mode: 0o777,
                uid: 0,
                gid: 0,
            },
        ];
        let (stats, bytes) =
            write_explicit_layer("pkgs", &entries, &small_blocks(2), Vec::new(), None).unwrap();
        let back = read_back(&bytes);
        assert_eq!(stats.entries, 5);
        let paths: Vec<&[u8]> = back.iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(
            paths,
            [
                &b"bin"[..],
                b"usr/",
                b"usr/bin/a",
                b"usr/bin/b",
                b"usr/bin/c"
            ]
        );
        assert_eq!(
            (back[2].data.as_slice(), back[2].gid, back[2].mode),
            (&b"HELLO"[..], 43, 0o644)
        );
        assert_eq!(
            (back[3].data.as_slice(), back[3].mode, back[3].mtime),
            (&b"WORLD"[..], 0o4755, 1)
        );
        assert_eq!(back[4].kind, EntryType::Link);
        assert_eq!(back[0].link.as_deref(), Some(&b"usr/bin"[..]));
        // The same entries in another order: the same bytes.
        let mut rev = entries.clone();
        rev.reverse();
        let (_, again) =
            write_explicit_layer("pkgs", &rev, &small_blocks(1), Vec::new(), None).unwrap();
        assert_eq!(again, bytes);
        // A hard link to nothing earlier is refused.
        let bad = vec![ExplicitEntry {
            dest: "a".into(),
            kind: ExplicitKind::HardLink("z".into()),
            mode: 0o644,
            uid: 0,
            gid: 0,
        }];
        assert!(write_explicit_layer("pkgs", &bad, &small_blocks(1), Vec::new(), None).is_err());
    }
}
