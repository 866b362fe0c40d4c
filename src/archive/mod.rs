//! Importing an image archive into the OCI layout: a docker-archive (what
//! `docker save` writes: `manifest.json`, a config, uncompressed layer tars)
//! or an OCI archive (`oci-layout`, `index.json`, `blobs/sha256/…`: what
//! BuildKit's `--output type=oci` writes). Every digest is checked on the way
//! in: a config against the ID it is stored under, a docker layer against its
//! `rootfs.diff_ids` entry, an OCI blob against its descriptor. Tags move only
//! once everything is stored, so a failed import leaves the layout as it was.
//!
//! The archive is read in place: one pass over the tar headers records where
//! each member's bytes are, then each member is streamed from its offset.
//! Nothing is held whole in memory but JSON documents (bounded in size).
//! Uncompressed docker layers are gzip-compressed as they stream, on every
//! core, by the same pipeline as the direct engine's layers; a layer
//! whose diff ID the layout already holds is only hashed, not compressed again.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use flate2::read::MultiGzDecoder;

use serde_json::Value;

use crate::engine::LayerOutcome;
use crate::image::{ConfigFile, Descriptor, Index, Manifest, mutate};
use crate::image::{Digest, Sha256Hasher, media};
use crate::layout::{Layout, LayoutError};
use crate::progress::{Progress, Task};

/// JSON members (manifests, configs, indexes) larger than this are refused.
const MAX_JSON: u64 = 16 * 1024 * 1024;
const BUF: usize = 256 * 1024;

/// Which kind of archive was imported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveFormat {
    /// `docker save` output.
    DockerArchive,
    /// An OCI image layout in a tar.
    OciArchive,
}

/// Why an archive could not be imported; every variant names the archive.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] crate::error::IoError),
    /// The archive is neither a docker-archive nor an OCI archive, or is malformed.
    #[error("{archive} is not a usable image archive: {reason}")]
    Invalid {
        /// The archive.
        archive: PathBuf,
        /// Why.
        reason: String,
    },
    /// A member the archive's own manifest names is not in it.
    #[error("{archive} has no member `{member}` (named by its {named_by})")]
    MissingMember {
        /// The archive.
        archive: PathBuf,
        /// The member path.
        member: String,
        /// Which document names it.
        named_by: String,
    },
    /// A member's bytes do not hash to the digest the archive declares for it.
    #[error("{what} (`{member}` in {archive}) is corrupt: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The archive.
        archive: PathBuf,
        /// The member path.
        member: String,
        /// What it is: `layer 3 of 5`, `the image config`, …
        what: String,
        /// The digest declared.
        expected: Digest,
        /// The digest of the bytes.
        actual: Digest,
    },
    /// A member's size differs from its descriptor's.
    #[error("{what} (`{member}` in {archive}) is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        /// The archive.
        archive: PathBuf,
        /// The member path.
        member: String,
        /// What it is.
        what: String,
        /// Declared size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// Writing into the layout failed.
    #[error("importing {archive} into the layout: {source}")]
    Layout {
        /// The archive.
        archive: PathBuf,
        /// The layout's error.
        #[source]
        source: LayoutError,
    },
}

impl ImportError {
    /// The exit code this error ends the process with.
    pub fn exit_code(&self) -> crate::error::ExitCode {
        match self {
            ImportError::Io(_)
            | ImportError::Layout {
                source: LayoutError::Io(_),
                ..
            } => crate::error::ExitCode::Failure,
            _ => crate::error::ExitCode::Input,
        }
    }
}

type Result<T> = std::result::Result<T, ImportError>;

/// What an import stored.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The archive's format.
    pub format: ArchiveFormat,
    /// What the tags point at: an image manifest (or, for a multi-platform
    /// OCI archive, an index).
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// The image config (the first image's, for an index).
    pub config: Digest,
    /// `os/arch[/variant]` (comma-separated for an index).
    pub platform: String,
    /// Layers, base first (the first image's, for an index).
    pub layers: Vec<LayerOutcome>,
}

/// Import the image in `archive` (format detected) into `layout` and point
/// `tags` at it. Nothing is tagged unless every blob was stored and verified.
pub fn import_archive(
    layout: &Layout,
    archive: &Path,
    tags: &[String],
    progress: &Progress,
) -> Result<Imported> {
    let ar = TarIndex::read(archive)?;
    let imported = if ar.has("manifest.json") {
        import_docker(layout, &ar, progress)?
    } else if ar.has("index.json") && ar.has("oci-layout") {
        import_oci(layout, &ar, progress)?
    } else {
        return Err(ImportError::Invalid {
            archive: archive.to_owned(),
            reason: "it has neither manifest.json (docker-archive) nor oci-layout + index.json (OCI archive)".into(),
        });
    };
    if !tags.is_empty() {
        layout
            .set_tags(&imported.media_type, &imported.digest, tags)
            .map_err(|e| ar.layout_err(e))?;
    }
    Ok(imported)
}

// ---------------------------------------------------------------- docker ---

fn import_docker(layout: &Layout, ar: &TarIndex, progress: &Progress) -> Result<Imported> {
    let manifest: Value = ar.json("manifest.json", "archive")?;
    let entries = manifest
        .as_array()
        .ok_or_else(|| ar.invalid("manifest.json is not an array"))?;
    let entry = match entries.as_slice() {
        [one] => one,
        [] => return Err(ar.invalid("manifest.json lists no image")),
        many => {
            return Err(ar.invalid(&format!(
                "manifest.json lists {} images; save one image per archive",
                many.len()
            )));
        }
    };
    let config_name = entry
        .get("Config")
        .and_then(Value::as_str)
        .ok_or_else(|| ar.invalid("manifest.json has no Config"))?;
    let layer_names: Vec<&str> = entry
        .get("Layers")
        .and_then(Value::as_array)
        .ok_or_else(|| ar.invalid("manifest.json has no Layers"))?
        .iter()
        .map(|l| {
            l.as_str()
                .ok_or_else(|| ar.invalid("a Layers entry is not a string"))
        })
        .collect::<Result<_>>()?;

    let config_bytes = ar.read_small(config_name, "manifest.json")?;
    let config_digest = Digest::of(&config_bytes);
    // The config is stored under its own digest: `<hex>.json` or `blobs/sha256/<hex>`.
    if let Some(named) = digest_in_name(config_name) {
        if named != config_digest {
            return Err(ImportError::DigestMismatch {
                archive: ar.path.clone(),
                member: config_name.to_owned(),
                what: "the image config".into(),
                expected: named,
                actual: config_digest,
            });
        }
    }
    let config =
        ConfigFile::parse(config_name, &config_bytes).map_err(|e| ar.invalid(&e.to_string()))?;
    let diff_ids: Vec<Digest> = config
        .diff_ids()
        .into_iter()
        .map(|d| d.ok_or_else(|| ar.invalid("a rootfs.diff_ids entry is not a sha256 digest")))
        .collect::<Result<_>>()?;
    if diff_ids.len() != layer_names.len() {
        return Err(ar.invalid(&format!(
            "manifest.json lists {} layers but the config has {} diff IDs",
            layer_names.len(),
            diff_ids.len()
        )));
    }
    let known = layout.known_layers();
    let total = layer_names.len();
    let jobs: Vec<LayerJob> = layer_names
        .iter()
        .zip(&diff_ids)
        .enumerate()
        .map(|(i, (name, diff_id))| LayerJob {
            member: (*name).to_owned(),
            diff_id: diff_id.clone(),
            what: format!("layer {} of {total}", i + 1),
            known: known.get(diff_id).cloned(),
        })
        .collect();
    let results = run_parallel(&jobs, |job| import_docker_layer(layout, ar, job, progress))?;

    let (blobs, reused): (Vec<Descriptor>, Vec<bool>) = results.into_iter().unzip();
    let outcomes = layer_outcomes(&config, &blobs, &reused);
    let (config_digest, config_size) = layout
        .write_blob(&config_bytes)
        .map_err(|e| ar.layout_err(e))?;
    let manifest = mutate::manifest(
        Descriptor::new(media::OCI_CONFIG, config_digest.clone(), config_size),
        &blobs,
    )
    .to_bytes();
    let (digest, size) = layout.write_blob(&manifest).map_err(|e| ar.layout_err(e))?;
    Ok(Imported {
        format: ArchiveFormat::DockerArchive,
        media_type: media::OCI_MANIFEST.to_owned(),
        digest,
        size,
        config: config_digest,
        platform: config
            .platform()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "unknown".into()),
        layers: outcomes,
    })
}

struct LayerJob {
    member: String,
    diff_id: Digest,
    what: String,
    known: Option<Descriptor>,
}

/// One docker layer into the layout: verified against its diff ID; gzip
/// members are stored as they are, plain tars compressed; a layer the layout
/// already holds (by diff ID) is only hashed.
fn import_docker_layer(
    layout: &Layout,
    ar: &TarIndex,
    job: &LayerJob,
    progress: &Progress,
) -> Result<(Descriptor, bool)> {
    let (mut r, len) = ar.open(&job.member, "manifest.json")?;
    let task = progress.task(format!("import {}", job.what), Some(len));
    let mut magic = [0u8; 4];
    let n = read_full(&mut r, &mut magic).map_err(|e| ar.io("reading", e))?;
    let head = &magic[..n];
    let mut r = io::Cursor::new(head.to_vec()).chain(r);
    let gzipped = head.starts_with(&[0x1f, 0x8b]);

    if let Some(known) = &job.known {
        // Same content as a layer already in the layout: only check it.
        let mut h = DiffHasher::new(gzipped);
        copy_counting(&mut r, &mut h, &task).map_err(|e| ar.io("reading", e))?;
        let actual = h.finish().map_err(|e| ar.io("decompressing", e))?;
        ar.check(&job.member, &job.what, &job.diff_id, actual)?;
        task.finish("exists");
        return Ok((known.clone(), true));
    }

    let mut w = layout.blob_writer().map_err(|e| ar.layout_err(e))?;
    let actual_diff = if gzipped {
        // Stored as is; the diff ID is of the decompressed bytes.
        let mut tee = TeeWriter {
            a: &mut w,
            b: DiffHasher::new(true),
        };
        copy_counting(&mut r, &mut tee, &task).map_err(|e| ar.io("reading", e))?;
        tee.b.finish().map_err(|e| ar.io("decompressing", e))?
    } else {
        // Compressed on all cores, as the direct engine's layers are.
        let (stats, _) = crate::layer::compress_tar_stream(
            &job.what,
            &mut r,
            &crate::layer::LayerOptions::default(),
            &mut w,
            Some(&task),
        )
        .map_err(|e| ar.io("compressing", io::Error::other(e)))?;
        stats.diff_id
    };
    // On a mismatch `w` is dropped uncommitted: its temp file goes, nothing is stored.
    ar.check(&job.member, &job.what, &job.diff_id, actual_diff)?;
    let (digest, size) = w.commit(None).map_err(|e| ar.layout_err(e))?;
    task.finish("done");
    Ok((Descriptor::new(media::OCI_LAYER_GZIP, digest, size), false))
}

/// `created_by` of each history entry that made a layer, in layer order.
fn layer_history(config: &ConfigFile) -> Vec<String> {
    config
        .layer_history()
        .into_iter()
        .map(|e| {
            let s = e.created_by.as_deref().unwrap_or("");
            let s = s
                .trim_start_matches("/bin/sh -c ")
                .trim_start_matches("#(nop) ")
                .trim();
            let short: String = s.chars().take(72).collect();
            if short.len() < s.len() {
                format!("{short}…")
            } else {
                short
            }
        })
        .collect()
}

/// What each layer of an image is, for the build's outcome: its blob, its
/// diff ID and history line from the config, whether it was already stored.
fn layer_outcomes(
    config: &ConfigFile,
    layers: &[Descriptor],
    reused: &[bool],
) -> Vec<LayerOutcome> {
    let history = layer_history(config);
    let diff_ids = config.diff_ids();
    layers
        .iter()
        .enumerate()
        .map(|(i, l)| LayerOutcome {
            name: format!("layer{}", i + 1),
            description: history.get(i).cloned().unwrap_or_default(),
            digest: l.digest.clone(),
            size: l.size,
            diff_id: diff_ids.get(i).cloned().flatten(),
            reused: reused.get(i).copied().unwrap_or(false),
        })
        .collect()
}

// ------------------------------------------------------------------- oci ---

fn import_oci(layout: &Layout, ar: &TarIndex, progress: &Progress) -> Result<Imported> {
    let index_bytes = ar.read_small("index.json", "archive")?;
    let top = Index::parse("index.json", &index_bytes).map_err(|e| ar.invalid(&e.to_string()))?;
    // Image manifests, looking through nested indexes; attestation manifests
    // (platform unknown/unknown) are left out.
    let mut images: Vec<(Descriptor, Vec<u8>)> = Vec::new();
    let mut indexes: Vec<(Descriptor, Vec<u8>)> = Vec::new();
    let mut todo: Vec<Descriptor> = top.manifests.clone();
    while let Some(desc) = todo.pop() {
        let bytes = ar.read_blob(
            &desc,
            "index.json",
            &format!("manifest {}", desc.digest.short()),
        )?;
        if media::is_index(&desc.media_type) {
            let index = Index::parse(&desc.digest.to_string(), &bytes)
                .map_err(|e| ar.invalid(&e.to_string()))?;
            for e in index.manifests {
                let attestation = e
                    .platform
                    .as_ref()
                    .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown");
                if !attestation {
                    todo.push(e);
                }
            }
            indexes.push((desc, bytes));
        } else {
            images.push((desc, bytes));
        }
    }
    images.reverse();
    if images.is_empty() {
        return Err(ar.invalid("index.json leads to no image manifest"));
    }

    let mut first: Option<(Digest, Vec<LayerOutcome>)> = None;
    let mut platforms = Vec::new();
    for (desc, bytes) in &images {
        let m = Manifest::parse(&desc.digest.to_string(), bytes)
            .map_err(|e| ar.invalid(&e.to_string()))?;
        let config_bytes = ar.read_blob(
            &m.config,
            &format!("manifest {}", desc.digest.short()),
            "the image config",
        )?;
        let config = ConfigFile::parse(&m.config.digest.to_string(), &config_bytes)
            .map_err(|e| ar.invalid(&e.to_string()))?;
        platforms.push(
            config
                .platform()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "unknown".into()),
        );
        let total = m.layers.len();
        let results = run_parallel(
            &m.layers.iter().enumerate().collect::<Vec<_>>(),
            |(i, l)| {
                let what = format!("layer {} of {total}", i + 1);
                let reused =
                    layout.has_blob(&l.digest) && layout.blob_size(&l.digest).ok() == Some(l.size);
                if !reused {
                    ar.copy_blob(
                        layout,
                        l,
                        &format!("manifest {}", desc.digest.short()),
                        &what,
                        progress,
                    )?;
                }
                Ok(reused)
            },
        )?;
        layout
            .write_blob(&config_bytes)
            .map_err(|e| ar.layout_err(e))?;
        layout.write_blob(bytes).map_err(|e| ar.layout_err(e))?;
        if first.is_none() {
            let outcomes = layer_outcomes(&config, &m.layers, &results);
            first = Some((m.config.digest.clone(), outcomes));
        }
    }
    for (desc, bytes) in &indexes {
        layout.write_blob(bytes).map_err(|e| ar.layout_err(e))?;
        let _ = desc;
    }
    let (config, layers) = first.expect("at least one image");
    // One image: tag its manifest. Several (multi-platform): tag the index
    // the archive names (the first top-level index).
    let (media_type, digest, size) = if images.len() == 1 {
        let d = &images[0].0;
        (d.media_type.clone(), d.digest.clone(), d.size)
    } else {
        let d = &indexes
            .first()
            .expect("several images come from an index")
            .0;
        (d.media_type.clone(), d.digest.clone(), d.size)
    };
    Ok(Imported {
        format: ArchiveFormat::OciArchive,
        media_type,
        digest,
        size,
        config,
        platform: platforms.join(","),
        layers,
    })
}

// ------------------------------------------------------------ the archive ---

#[derive(Clone, Debug)]
enum Member {
    File { offset: u64, size: u64 },
    Link(String),
}

/// Where each member of a tar archive is, from one pass over its headers.
struct TarIndex {
    path: PathBuf,
    members: HashMap<String, Member>,
}

impl TarIndex {
    fn read(path: &Path) -> Result<TarIndex> {
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

    fn has(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    fn lookup(&self, name: &str) -> Option<(u64, u64)> {
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
    fn open(&self, name: &str, named_by: &str) -> Result<(io::Take<BufReader<File>>, u64)> {
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

    fn read_small(&self, name: &str, named_by: &str) -> Result<Vec<u8>> {
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

    fn json(&self, name: &str, named_by: &str) -> Result<Value> {
        let bytes = self.read_small(name, named_by)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid(&format!("{name} is not JSON: {e}")))
    }

    /// A small OCI blob, checked against its descriptor.
    fn read_blob(&self, desc: &Descriptor, named_by: &str, what: &str) -> Result<Vec<u8>> {
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
    fn copy_blob(
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

    fn check(&self, member: &str, what: &str, expected: &Digest, actual: Digest) -> Result<()> {
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

    fn invalid(&self, reason: &str) -> ImportError {
        ImportError::Invalid {
            archive: self.path.clone(),
            reason: reason.to_owned(),
        }
    }

    fn io(&self, action: &'static str, source: io::Error) -> ImportError {
        ImportError::Io(crate::error::IoError {
            action,
            path: self.path.clone(),
            source,
        })
    }

    fn layout_err(&self, source: LayoutError) -> ImportError {
        ImportError::Layout {
            archive: self.path.clone(),
            source,
        }
    }
}

fn blob_member(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// `./a//b/` → `a/b`.
fn normalize(name: &str) -> String {
    name.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// A relative link target against a directory, `..` resolved.
fn resolve(dir: &str, target: &str) -> String {
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
fn digest_in_name(name: &str) -> Option<Digest> {
    let n = normalize(name);
    if let Some(hex) = n.strip_prefix("blobs/sha256/") {
        return Digest::from_hex(hex).ok();
    }
    n.strip_suffix(".json")
        .and_then(|hex| Digest::from_hex(hex).ok())
}

// --------------------------------------------------------------- streams ---

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn copy_counting(r: &mut impl Read, w: &mut impl Write, task: &Task) -> io::Result<u64> {
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

struct TeeWriter<A, B> {
    a: A,
    b: B,
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
enum DiffHasher {
    Plain(Sha256Hasher),
    Gzip(Box<flate2::write::MultiGzDecoder<HashSink>>),
}

struct HashSink(Sha256Hasher);

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
    fn new(gzipped: bool) -> DiffHasher {
        if gzipped {
            DiffHasher::Gzip(Box::new(flate2::write::MultiGzDecoder::new(HashSink(
                Sha256Hasher::new(),
            ))))
        } else {
            DiffHasher::Plain(Sha256Hasher::new())
        }
    }
    fn finish(self) -> io::Result<Digest> {
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
fn run_parallel<T: Sync, R: Send>(
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

/// The manifest annotation that records the config an engine produced, when
/// the tool wrote a new config over it (labels filled in): an engine's image
/// ID (a config digest) then still finds the image in the layout.
pub const BUILT_CONFIG_ANNOTATION: &str = "dev.guildhouse.guildhall-image.built-config";

/// An image of the layout whose config is `config`, or whose manifest says it
/// was made from it ([`BUILT_CONFIG_ANNOTATION`]): a build that produced the
/// same image ID needs no export and no import. Every layer is reported reused.
pub fn find_by_config(layout: &Layout, config: &Digest) -> Option<Imported> {
    let wanted = config.to_string();
    for img in layout.images().ok()? {
        if !media::is_manifest(&img.media_type) {
            continue;
        }
        let Ok(bytes) = layout.read_blob(&img.digest) else {
            continue;
        };
        let Ok(m) = Manifest::parse(&img.digest.to_string(), &bytes) else {
            continue;
        };
        let annotated = m.annotations.get(BUILT_CONFIG_ANNOTATION).cloned();
        if m.config.digest != *config && annotated.as_deref() != Some(wanted.as_str()) {
            continue;
        }
        // Only an image whose blobs are all here.
        if !m
            .layers
            .iter()
            .all(|l| layout.blob_size(&l.digest).ok() == Some(l.size))
        {
            continue;
        }
        let Ok(cfg) = layout.read_blob(&m.config.digest) else {
            continue;
        };
        let Ok(cfg) = ConfigFile::parse(&m.config.digest.to_string(), &cfg) else {
            continue;
        };
        return Some(Imported {
            format: ArchiveFormat::DockerArchive,
            media_type: img.media_type.clone(),
            digest: img.digest.clone(),
            size: img.size,
            config: m.config.digest.clone(),
            platform: cfg
                .platform()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "unknown".into()),
            layers: layer_outcomes(&cfg, &m.layers, &vec![true; m.layers.len()]),
        });
    }
    None
}

/// Decompress-and-read helper for callers that look inside imported layers.
pub(crate) fn layer_reader(
    layout: &Layout,
    blob: &Descriptor,
) -> std::result::Result<Box<dyn Read>, LayoutError> {
    let f = BufReader::with_capacity(BUF, layout.open_blob(&blob.digest)?);
    Ok(if media::is_gzip_layer(&blob.media_type) {
        Box::new(MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_and_link_targets_are_normalised() {
        assert_eq!(normalize("./abc//layer.tar"), "abc/layer.tar");
        assert_eq!(resolve("abc", "../def/layer.tar"), "def/layer.tar");
        let hex = "a".repeat(64);
        assert_eq!(digest_in_name(&format!("{hex}.json")).unwrap().hex(), hex);
        assert_eq!(
            digest_in_name(&format!("blobs/sha256/{hex}"))
                .unwrap()
                .hex(),
            hex
        );
        assert!(digest_in_name(&format!("{hex}/layer.tar")).is_none());
    }
}
