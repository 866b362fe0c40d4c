//! An archive read as a tar of named members: where each is, from one pass over the headers, opened by name with hard links followed, small members read with a bound; and the stream helpers the imports share.

#[allow(unused_imports)]
use super::*;

#[derive(Clone, Debug)]
pub(super) enum Member {
    File { offset: u64, size: u64 },
    Link(String),
}

/// Where each member of a tar archive is, from one pass over its headers.
pub(super) struct TarIndex {
    pub(super) path: PathBuf,
    pub(super) members: HashMap<String, Member>,
}

impl TarIndex {
    pub(super) fn read(path: &Path) -> Result<TarIndex> {
        let io_err = |action, source| {
            ImportError::Io(crate::error::IoError {
                action,
                path: path.to_owned(),
                source,
            })
        };
        let f = File::open(path).map_err(|e| io_err("opening", e))?;
        let mut ar = tar::Archive::new(BufReader::with_capacity(64 * 1024, f));
        let mut members = HashMap::new();
        for entry in ar.entries_with_seek().map_err(|e| io_err("reading", e))? {
            let entry = entry.map_err(|e| io_err("reading", e))?;
            let name = normalize(
                &entry
                    .path()
                    .map_err(|e| io_err("reading", e))?
                    .to_string_lossy(),
            );
            let kind = entry.header().entry_type();
            if kind.is_file() {
                members.insert(
                    name,
                    Member::File {
                        offset: entry.raw_file_position(),
                        size: entry.size(),
                    },
                );
            } else if kind.is_symlink() || kind.is_hard_link() {
                let Some(target) = entry.link_name().map_err(|e| io_err("reading", e))? else {
                    continue;
                };
                let target = target.to_string_lossy().into_owned();
                // Symlinks are relative to the member's directory; hard links to the root.
                let resolved = if kind.is_symlink() {
                    let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    resolve(dir, &target)
                } else {
                    normalize(&target)
                };
                members.insert(name, Member::Link(resolved));
            }
        }
        Ok(TarIndex {
            path: path.to_owned(),
            members,
        })
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    pub(super) fn lookup(&self, name: &str) -> Option<(u64, u64)> {
        let mut name = normalize(name);
        for _ in 0..16 {
            match self.members.get(&name)? {
                Member::File { offset, size } => return Some((*offset, *size)),
                Member::Link(t) => name = t.clone(),
            }
        }
        None
    }

    /// A member's bytes, streamed from its offset, and its length.
    pub(super) fn open(
        &self,
        name: &str,
        named_by: &str,
    ) -> Result<(io::Take<BufReader<File>>, u64)> {
        let (offset, size) = self
            .lookup(name)
            .ok_or_else(|| ImportError::MissingMember {
                archive: self.path.clone(),
                member: name.to_owned(),
                named_by: named_by.to_owned(),
            })?;
        let mut f = File::open(&self.path).map_err(|e| self.io("opening", e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| self.io("reading", e))?;
        Ok((BufReader::with_capacity(BUF, f).take(size), size))
    }

    pub(super) fn read_small(&self, name: &str, named_by: &str) -> Result<Vec<u8>> {
        let (mut r, size) = self.open(name, named_by)?;
        if size > MAX_JSON {
            return Err(self.invalid(&format!(
                "`{name}` is {size} bytes, too big for a JSON document"
            )));
        }
        let mut out = Vec::with_capacity(size as usize);
        r.read_to_end(&mut out).map_err(|e| self.io("reading", e))?;
        Ok(out)
    }

    pub(super) fn json(&self, name: &str, named_by: &str) -> Result<Value> {
        let bytes = self.read_small(name, named_by)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid(&format!("{name} is not JSON: {e}")))
    }

    /// A small OCI blob, checked against its descriptor.
    pub(super) fn read_blob(
        &self,
        desc: &Descriptor,
        named_by: &str,
        what: &str,
    ) -> Result<Vec<u8>> {
        let member = blob_member(&desc.digest);
        let bytes = self.read_small(&member, named_by)?;
        if bytes.len() as u64 != desc.size {
            return Err(ImportError::SizeMismatch {
                archive: self.path.clone(),
                member,
                what: what.to_owned(),
                expected: desc.size,
                actual: bytes.len() as u64,
            });
        }
        self.check(&member, what, &desc.digest, Digest::of(&bytes))?;
        Ok(bytes)
    }

    /// A (large) OCI blob into the layout, streamed and checked.
    pub(super) fn copy_blob(
        &self,
        layout: &Layout,
        desc: &Descriptor,
        named_by: &str,
        what: &str,
        progress: &Progress,
    ) -> Result<()> {
        let member = blob_member(&desc.digest);
        let (mut r, len) = self.open(&member, named_by)?;
        if len != desc.size {
            return Err(ImportError::SizeMismatch {
                archive: self.path.clone(),
                member,
                what: what.to_owned(),
                expected: desc.size,
                actual: len,
            });
        }
        let task = progress.task(format!("import {what}"), Some(len));
        let mut w = layout.blob_writer().map_err(|e| self.layout_err(e))?;
        copy_counting(&mut r, &mut w, &task).map_err(|e| self.io("reading", e))?;
        match w.commit(Some(&desc.digest)) {
            Ok(_) => {}
            Err(LayoutError::DigestMismatch {
                expected, actual, ..
            }) => {
                return Err(ImportError::DigestMismatch {
                    archive: self.path.clone(),
                    member,
                    what: what.to_owned(),
                    expected,
                    actual,
                });
            }
            Err(e) => return Err(self.layout_err(e)),
        }
        task.finish("done");
        Ok(())
    }

    pub(super) fn check(
        &self,
        member: &str,
        what: &str,
        expected: &Digest,
        actual: Digest,
    ) -> Result<()> {
        if &actual == expected {
            Ok(())
        } else {
            Err(ImportError::DigestMismatch {
                archive: self.path.clone(),
                member: member.to_owned(),
                what: what.to_owned(),
                expected: expected.clone(),
                actual,
            })
        }
    }

    pub(super) fn invalid(&self, reason: &str) -> ImportError {
        ImportError::Invalid {
            archive: self.path.clone(),
            reason: reason.to_owned(),
        }
    }

    pub(super) fn io(&self, action: &'static str, source: io::Error) -> ImportError {
        ImportError::Io(crate::error::IoError {
            action,
            path: self.path.clone(),
            source,
        })
    }

    pub(super) fn layout_err(&self, source: LayoutError) -> ImportError {
        ImportError::Layout {
            archive: self.path.clone(),
            source,
        }
    }
}

pub(super) fn blob_member(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// `./a//b/` → `a/b`.
pub(super) fn normalize(name: &str) -> String {
    name.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// A relative link target against a directory, `..` resolved.
pub(super) fn resolve(dir: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        dir.split('/').filter(|c| !c.is_empty()).collect()
    };
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// The digest a docker-archive member name carries: `<hex>.json`, `<hex>/…`
/// is not one (legacy layer IDs are not content digests), `blobs/sha256/<hex>` is.
pub(super) fn digest_in_name(name: &str) -> Option<Digest> {
    let n = normalize(name);
    if let Some(hex) = n.strip_prefix("blobs/sha256/") {
        return Digest::from_hex(hex).ok();
    }
    n.strip_suffix(".json")
        .and_then(|hex| Digest::from_hex(hex).ok())
}

// --------------------------------------------------------------- streams ---

pub(super) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

pub(super) fn copy_counting(r: &mut impl Read, w: &mut impl Write, task: &Task) -> io::Result<u64> {
    let mut buf = vec![0u8; BUF];
    let mut total = 0;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        task.inc(n as u64);
        total += n as u64;
    }
    w.flush()?;
    Ok(total)
}

pub(super) struct TeeWriter<A, B> {
    pub(super) a: A,
    pub(super) b: B,
}

impl<A: Write, B: Write> Write for TeeWriter<A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.a.write(buf)?;
        self.b.write_all(&buf[..n])?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.a.flush()?;
        self.b.flush()
    }
}

/// sha256 of a layer's uncompressed bytes, fed either the plain tar or its
/// gzip stream (decompressed as it comes, so memory stays bounded).
pub(super) enum DiffHasher {
    Plain(Sha256Hasher),
    Gzip(Box<flate2::write::MultiGzDecoder<HashSink>>),
}

pub(super) struct HashSink(Sha256Hasher);

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl DiffHasher {
    pub(super) fn new(gzipped: bool) -> DiffHasher {
        if gzipped {
            DiffHasher::Gzip(Box::new(flate2::write::MultiGzDecoder::new(HashSink(
                Sha256Hasher::new(),
            ))))
        } else {
            DiffHasher::Plain(Sha256Hasher::new())
        }
    }
    pub(super) fn finish(self) -> io::Result<Digest> {
        match self {
            DiffHasher::Plain(h) => Ok(h.finish()),
            DiffHasher::Gzip(d) => Ok(d.finish()?.0.finish()),
        }
    }
}

impl Write for DiffHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            DiffHasher::Plain(h) => {
                h.update(buf);
                Ok(buf.len())
            }
            DiffHasher::Gzip(d) => d.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            DiffHasher::Plain(_) => Ok(()),
            DiffHasher::Gzip(d) => d.flush(),
        }
    }
}

/// Run `f` over `items` on up to one thread per core; results in item order,
/// the first error (in item order) wins.
pub(super) fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<R>>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() {
                        break;
                    }
                    let r = f(&items[i]);
                    let failed = r.is_err();
                    *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                    if failed {
                        // Stop handing out work; others finish what they hold.
                        next.store(items.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let mut out = Vec::with_capacity(items.len());
    for slot in results {
        match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(r) => out.push(r?),
            None => unreachable!("a job was skipped only after an earlier error"),
        }
    }
    Ok(out)
}
