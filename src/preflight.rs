//! Will this release start on this base? Every ELF of ERTS and of the NIFs
//! and port programs under `lib/*/priv` is checked against the base image's
//! files the way the dynamic linker would: its loader and `DT_NEEDED`
//! libraries are found, the symbol versions it needs (`GLIBC_2.34`,
//! `OPENSSL_3.0.0`, …) are defined by the library found, and it is built for
//! the platform of ERTS, which is the platform of the base.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use goblin::elf::Elf;
use goblin::elf::header::{EI_CLASS, ELFCLASS64, ET_DYN, ET_EXEC};

use crate::image::Platform;
use crate::release::{INSTALL_DIR, Release};

/// Shared libraries bigger than this are not parsed for their symbol versions.
const MAX_LIBRARY_BYTES: u64 = 64 << 20;
/// Symlinks followed while resolving one path (Linux's limit is 40).
const MAX_SYMLINK_HOPS: usize = 40;
const VER_FLG_WEAK: u16 = 0x2;

/// Preflight failures.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The release would not start on the base image.
    #[error("the release would not start on the base image:\n{0}")]
    Failed(PreflightReport),
    /// ERTS is built for another platform than the base image.
    #[error("the release's ERTS is built for {release}, but the base image {base_name} is {base}")]
    PlatformMismatch {
        /// The platform of ERTS (`beam.smp`).
        release: String,
        /// The platform of the base image.
        base: String,
        /// The base image.
        base_name: String,
    },
    /// A layer of the base image cannot be read.
    #[error("reading layer {index} of the base image: {source}")]
    BaseLayer {
        /// Its position, 0 = bottom.
        index: usize,
        /// What the tar or gzip reader said.
        #[source]
        source: io::Error,
    },
}

impl PreflightError {
    /// The exit code this error ends the process with.
    pub fn exit_code(&self) -> crate::error::ExitCode {
        match self {
            PreflightError::BaseLayer { .. } => crate::error::ExitCode::Input,
            _ => crate::error::ExitCode::Preflight,
        }
    }
}

// ---------------------------------------------------------------------------
// The base image's file system

/// What a path of the base image is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Node {
    Dir,
    File,
    Symlink(PathBuf),
    /// A hard link to another path of the image (a file).
    HardLink(PathBuf),
    /// A device, FIFO, …
    Other,
}

/// The base image's file tree, from its layers in order (OCI whiteouts
/// applied): metadata only, plus the symbol versions each shared library
/// defines and the dynamic linker's configuration.
/// It serialises (to JSON) so that the index of a base image can be kept
/// beside the cached base and not rebuilt by every build.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct BaseRootfs {
    nodes: BTreeMap<PathBuf, Node>,
    /// Version definitions (ELF verdef) of the shared libraries.
    verdefs: HashMap<PathBuf, Vec<String>>,
    /// Text of `/etc/ld.so.conf` and `/etc/ld.so.conf.d/*.conf`.
    ld_conf: BTreeMap<PathBuf, String>,
}

/// One layer's changes, applied once it has been read whole (whiteouts
/// only hide what lower layers hold).
#[derive(Default)]
struct LayerChanges {
    added: Vec<(PathBuf, Node)>,
    whiteouts: Vec<PathBuf>,
    opaque: Vec<PathBuf>,
    verdefs: Vec<(PathBuf, Vec<String>)>,
    ld_conf: Vec<(PathBuf, String)>,
}

impl BaseRootfs {
    /// Read the base image's layer tars, bottom first; `true` marks a gzip
    /// layer (several gzip members are fine).
    pub fn from_layers<R: Read>(
        layers: impl IntoIterator<Item = (R, bool)>,
    ) -> Result<BaseRootfs, PreflightError> {
        let mut fs = BaseRootfs::default();
        for (index, (reader, gzip)) in layers.into_iter().enumerate() {
            let changes = if gzip {
                read_layer(MultiGzDecoder::new(reader))
            } else {
                read_layer(reader)
            }
            .map_err(|source| PreflightError::BaseLayer { index, source })?;
            fs.apply(changes);
        }
        Ok(fs)
    }

    fn apply(&mut self, c: LayerChanges) {
        for dir in &c.opaque {
            self.remove_below(dir);
        }
        for path in &c.whiteouts {
            self.remove_below(path);
            self.remove(path);
        }
        for (path, node) in c.added {
            if node != Node::Dir {
                self.remove_below(&path);
            }
            self.verdefs.remove(&path);
            self.ld_conf.remove(&path);
            self.nodes.insert(path, node);
        }
        self.verdefs.extend(c.verdefs);
        self.ld_conf.extend(c.ld_conf);
    }

    fn remove(&mut self, path: &Path) {
        self.nodes.remove(path);
        self.verdefs.remove(path);
        self.ld_conf.remove(path);
    }

    /// Remove everything below `dir` (not `dir` itself).
    fn remove_below(&mut self, dir: &Path) {
        let below: Vec<PathBuf> = self.descendants(dir).cloned().collect();
        for p in below {
            self.remove(&p);
        }
    }

    /// Paths strictly below `dir`. Path order is by component, so they
    /// follow `dir` in the map without a gap.
    fn descendants<'a>(&'a self, dir: &'a Path) -> impl Iterator<Item = &'a PathBuf> + 'a {
        use std::ops::Bound;
        self.nodes
            .range::<Path, _>((Bound::Excluded(dir), Bound::Unbounded))
            .map(|(p, _)| p)
            .take_while(move |p| p.starts_with(dir))
    }

    /// What `path` (absolute, not resolved) is: a directory is also implied
    /// by anything below it, as layers need not list parents.
    fn node(&self, path: &Path) -> Option<Node> {
        if path == Path::new("/") {
            return Some(Node::Dir);
        }
        if let Some(n) = self.nodes.get(path) {
            return Some(match n {
                Node::HardLink(target) => match self.nodes.get(target) {
                    Some(Node::File) => Node::File,
                    _ => return None,
                },
                other => other.clone(),
            });
        }
        self.descendants(path).next().map(|_| Node::Dir)
    }

    /// The path with every symlink resolved, when it names a regular file.
    pub fn resolve_file(&self, path: &Path) -> Option<PathBuf> {
        let view = ImageView {
            base: self,
            app: None,
        };
        match view.resolve(path)? {
            (p, Kind::File) => Some(p),
            _ => None,
        }
    }

    /// Whether a path exists (any kind), symlinks followed.
    pub fn exists(&self, path: &Path) -> bool {
        ImageView {
            base: self,
            app: None,
        }
        .resolve(path)
        .is_some()
    }

    /// The symbol versions a shared library of the image defines (after
    /// resolving symlinks and hard links), when it was an ELF file.
    fn verdefs_of(&self, resolved: &Path) -> Option<&[String]> {
        let key = match self.nodes.get(resolved) {
            Some(Node::HardLink(target)) => target.as_path(),
            _ => resolved,
        };
        self.verdefs.get(key).map(Vec::as_slice)
    }

    /// Directories `/etc/ld.so.conf` (and the `.conf` files it includes) add.
    fn ld_conf_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for text in self.ld_conf.values() {
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() || line.starts_with("include ") {
                    continue; // includes: every .conf in ld.so.conf.d is read anyway
                }
                dirs.push(PathBuf::from(line));
            }
        }
        dirs
    }
}

/// An absolute, `..`-free path for an archive member (`./usr/lib/` →
/// `/usr/lib`); `None` for the root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    (out != Path::new("/")).then_some(out)
}

fn is_shared_library_name(name: &[u8]) -> bool {
    name.ends_with(b".so") || name.windows(4).any(|w| w == b".so.")
}

fn is_ld_conf(path: &Path) -> bool {
    path == Path::new("/etc/ld.so.conf")
        || (path.parent() == Some(Path::new("/etc/ld.so.conf.d"))
            && path.extension().is_some_and(|e| e == "conf"))
}

fn read_layer(reader: impl Read) -> io::Result<LayerChanges> {
    let mut archive = tar::Archive::new(reader);
    let mut c = LayerChanges::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let Some(path) = normalize(&entry.path()?) else {
            continue;
        };
        let name = path
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let parent = path.parent().unwrap_or(Path::new("/")).to_owned();
        if name == b".wh..wh..opq" {
            c.opaque.push(parent);
            continue;
        }
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            c.whiteouts
                .push(parent.join(std::ffi::OsStr::from_bytes(hidden)));
            continue;
        }
        let kind = entry.header().entry_type();
        let node = if kind.is_dir() {
            Node::Dir
        } else if kind.is_symlink() {
            Node::Symlink(
                entry
                    .link_name()?
                    .map(|l| l.into_owned())
                    .unwrap_or_default(),
            )
        } else if kind.is_hard_link() {
            match entry.link_name()?.as_deref().and_then(normalize) {
                Some(target) => Node::HardLink(target),
                None => Node::Other,
            }
        } else if kind.is_file() {
            let size = entry.size();
            if is_shared_library_name(&name) && size <= MAX_LIBRARY_BYTES {
                let mut bytes = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut bytes)?;
                if let Some(v) = elf_verdefs(&bytes) {
                    c.verdefs.push((path.clone(), v));
                }
            } else if is_ld_conf(&path) && size <= 1 << 20 {
                let mut text = String::new();
                if entry.read_to_string(&mut text).is_ok() {
                    c.ld_conf.push((path.clone(), text));
                }
            }
            Node::File
        } else if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        } else {
            Node::Other
        };
        c.added.push((path, node));
    }
    // Read to the end, so a gzip layer's trailer is checked too.
    io::copy(&mut archive.into_inner(), &mut io::sink())?;
    Ok(c)
}

/// The version names an ELF shared library defines (verdef), `None` when
/// the bytes are not ELF.
fn elf_verdefs(bytes: &[u8]) -> Option<Vec<String>> {
    if !bytes.starts_with(b"\x7fELF") {
        return None;
    }
    let elf = Elf::parse(bytes).ok()?;
    let mut names = Vec::new();
    if let Some(verdef) = &elf.verdef {
        for def in verdef.iter() {
            // The first aux entry names the version; the others its parents.
            if let Some(aux) = def.iter().next() {
                if let Some(n) = elf.dynstrtab.get_at(aux.vda_name) {
                    names.push(n.to_owned());
                }
            }
        }
    }
    Some(names)
}

// ---------------------------------------------------------------------------
// The image as the dynamic linker sees it: the base, with the release at /app

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
    Other,
}

struct ImageView<'a> {
    base: &'a BaseRootfs,
    /// The release directory on disk, mounted at [`INSTALL_DIR`].
    app: Option<&'a Path>,
}

impl ImageView<'_> {
    /// What `path` is, without following a final symlink.
    fn lookup(&self, path: &Path) -> Option<Kind> {
        if let Some(app) = self.app {
            if let Ok(rel) = path.strip_prefix(INSTALL_DIR) {
                let disk = app.join(rel);
                let meta = fs::symlink_metadata(&disk).ok()?;
                let ft = meta.file_type();
                return Some(if ft.is_dir() {
                    Kind::Dir
                } else if ft.is_file() {
                    Kind::File
                } else if ft.is_symlink() {
                    Kind::Symlink(fs::read_link(&disk).ok()?)
                } else {
                    Kind::Other
                });
            }
        }
        Some(match self.base.node(path)? {
            Node::Dir => Kind::Dir,
            Node::File | Node::HardLink(_) => Kind::File,
            Node::Symlink(t) => Kind::Symlink(t),
            Node::Other => Kind::Other,
        })
    }

    /// Resolve every symlink of an absolute path, like the kernel does.
    fn resolve(&self, path: &Path) -> Option<(PathBuf, Kind)> {
        let mut todo: VecDeque<OsString> = components(path);
        let mut cur = PathBuf::from("/");
        let mut kind = Kind::Dir;
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            if kind != Kind::Dir {
                return None; // a path through a file
            }
            if c == ".." {
                cur.pop();
                continue;
            }
            let candidate = cur.join(&c);
            match self.lookup(&candidate)? {
                Kind::Symlink(target) => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return None;
                    }
                    if target.is_absolute() {
                        cur = PathBuf::from("/");
                    }
                    for t in components(&target).into_iter().rev() {
                        todo.push_front(t);
                    }
                }
                k => {
                    cur = candidate;
                    kind = k;
                }
            }
        }
        Some((cur, kind))
    }

    fn resolve_file(&self, path: &Path) -> Option<PathBuf> {
        match self.resolve(path)? {
            (p, Kind::File) => Some(p),
            _ => None,
        }
    }

    /// The symbol versions the library at `resolved` defines, when known.
    fn verdefs(&self, resolved: &Path) -> Option<Vec<String>> {
        match (self.app, resolved.strip_prefix(INSTALL_DIR)) {
            (Some(app), Ok(rel)) => elf_verdefs(&fs::read(app.join(rel)).ok()?),
            _ => self.base.verdefs_of(resolved).map(<[String]>::to_vec),
        }
    }
}

/// Normal and `..` components of a path (`.` and the root dropped).
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// The Debian multiarch triplet of a platform.
fn triplet(platform: &Platform) -> Option<&'static str> {
    Some(match platform.architecture.as_str() {
        "amd64" => "x86_64-linux-gnu",
        "arm64" => "aarch64-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "386" => "i386-linux-gnu",
        "ppc64le" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        _ => return None,
    })
}

/// The Debian (bookworm) package that ships a library, for the libraries a
/// release commonly needs.
pub fn debian_package(library: &str) -> Option<&'static str> {
    let name = library.rsplit('/').next().unwrap_or(library);
    let glibc = [
        "libc.so.",
        "libm.so.",
        "libpthread.so.",
        "libdl.so.",
        "librt.so.",
        "libutil.so.",
        "libresolv.so.",
        "libanl.so.",
        "libmvec.so.",
        "ld-linux",
    ];
    if glibc.iter().any(|p| name.starts_with(p)) {
        return Some("libc6");
    }
    let table: &[(&str, &str)] = &[
        ("libcrypto.so.3", "libssl3"),
        ("libssl.so.3", "libssl3"),
        ("libcrypto.so.1.1", "libssl1.1"),
        ("libssl.so.1.1", "libssl1.1"),
        ("libtinfo.so.6", "libtinfo6"),
        ("libncursesw.so.6", "libncursesw6"),
        ("libncurses.so.6", "libncurses6"),
        ("libstdc++.so.6", "libstdc++6"),
        ("libgcc_s.so.1", "libgcc-s1"),
        ("libz.so.1", "zlib1g"),
        ("libsctp.so.1", "libsctp1"),
        ("libodbc.so.2", "unixodbc"),
        ("libsystemd.so.0", "libsystemd0"),
        ("libcrypt.so.1", "libcrypt1"),
        ("libnsl.so.2", "libnsl2"),
    ];
    if let Some((_, p)) = table.iter().find(|(l, _)| *l == name) {
        return Some(p);
    }
    if name.starts_with("libwx_") || name.starts_with("libwx") {
        return Some("libwxgtk3.2-1");
    }
    if name.starts_with("libGL") {
        return Some("libgl1");
    }
    None
}

// ---------------------------------------------------------------------------
// The check

/// What is wrong with one file of the release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// A `DT_NEEDED` library is neither in the base image nor in the release.
    MissingLibrary {
        /// Its name (`libcrypto.so.3`).
        library: String,
        /// The Debian package that has it, when known.
        package: Option<&'static str>,
    },
    /// The dynamic loader (`PT_INTERP`) is not in the base image.
    MissingLoader {
        /// Its path (`/lib64/ld-linux-x86-64.so.2`).
        path: String,
        /// The Debian package that has it, when known.
        package: Option<&'static str>,
    },
    /// The library is there but does not define a symbol version the file needs.
    MissingVersion {
        /// The library (`libc.so.6`).
        library: String,
        /// The version (`GLIBC_2.34`).
        version: String,
        /// The newest version of that family it does define (`GLIBC_2.31`).
        newest: Option<String>,
        /// The Debian package that has the library, when known.
        package: Option<&'static str>,
    },
    /// The file is built for another machine than ERTS.
    WrongArchitecture {
        /// What the file is built for (`linux/arm64`, or an ELF machine number).
        found: String,
        /// The platform of ERTS.
        expected: Platform,
    },
    /// ERTS is built for another platform than the base image.
    PlatformMismatch {
        /// The platform of ERTS.
        release: Platform,
        /// The platform of the base image.
        base: Platform,
    },
    /// The file starts like ELF but cannot be read or parsed.
    Unreadable {
        /// Why.
        reason: String,
    },
}

/// One problem: a file of the release and what it lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file, relative to the release root (`erts-13.1.5/bin/beam.smp`).
    pub file: PathBuf,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl Problem {
    /// The Debian package that would fix it, when known.
    pub fn package(&self) -> Option<&'static str> {
        match &self.kind {
            ProblemKind::MissingLibrary { package, .. }
            | ProblemKind::MissingLoader { package, .. }
            | ProblemKind::MissingVersion { package, .. } => *package,
            _ => None,
        }
    }
}

fn pkg(package: &Option<&'static str>) -> String {
    package
        .map(|p| format!(" (Debian package {p})"))
        .unwrap_or_default()
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match &self.kind {
            ProblemKind::MissingLibrary { library, package } => write!(
                f,
                "{file}: needs {library}{}, not found in the base image",
                pkg(package)
            ),
            ProblemKind::MissingLoader { path, package } => write!(
                f,
                "{file}: needs the dynamic loader {path}{}, not found in the base image (is it glibc-based?)",
                pkg(package)
            ),
            ProblemKind::MissingVersion {
                library,
                version,
                newest,
                package,
            } => {
                write!(f, "{file}: needs {version} from {library}{}", pkg(package))?;
                match newest {
                    Some(n) => write!(
                        f,
                        ", but the base image's {library} provides only up to {n} (the release was built on a newer system than the base)"
                    ),
                    None => write!(f, ", which the base image's {library} does not provide"),
                }
            }
            ProblemKind::WrongArchitecture { found, expected } => write!(
                f,
                "{file}: built for {found}, but ERTS is built for {expected}"
            ),
            ProblemKind::PlatformMismatch { release, base } => write!(
                f,
                "{file}: ERTS is built for {release}, but the base image is {base}"
            ),
            ProblemKind::Unreadable { reason } => {
                write!(f, "{file}: not a readable ELF file: {reason}")
            }
        }
    }
}

/// What preflight found: nothing, when the release should start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreflightReport {
    /// The problems, in release-path order.
    pub problems: Vec<Problem>,
    /// ELF files checked.
    pub files_checked: usize,
}

impl PreflightReport {
    /// No problems.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Debian packages that would fix problems, sorted, each once.
    pub fn packages(&self) -> Vec<&'static str> {
        let set: BTreeSet<&'static str> =
            self.problems.iter().filter_map(Problem::package).collect();
        set.into_iter().collect()
    }

    /// `Ok` when there are no problems; a platform mismatch of ERTS and the
    /// base becomes [`PreflightError::PlatformMismatch`], anything else
    /// [`PreflightError::Failed`].
    pub fn into_result(self, base_name: &str) -> Result<PreflightReport, PreflightError> {
        if let Some(ProblemKind::PlatformMismatch { release, base }) = self
            .problems
            .iter()
            .map(|p| &p.kind)
            .find(|k| matches!(k, ProblemKind::PlatformMismatch { .. }))
        {
            return Err(PreflightError::PlatformMismatch {
                release: release.to_string(),
                base: base.to_string(),
                base_name: base_name.to_owned(),
            });
        }
        if self.is_ok() {
            Ok(self)
        } else {
            Err(PreflightError::Failed(self))
        }
    }
}

impl fmt::Display for PreflightReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.problems.is_empty() {
            return write!(f, "no problems in {} ELF files", self.files_checked);
        }
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {p}")?;
        }
        let packages = self.packages();
        if !packages.is_empty() {
            write!(
                f,
                "\nAdd to the base image: apt-get install -y --no-install-recommends {}",
                packages.join(" ")
            )?;
        }
        Ok(())
    }
}

/// What preflight needs of one ELF file of the release.
#[derive(Clone, Debug, Default)]
struct ElfInfo {
    /// Relative to the release root.
    rel: PathBuf,
    machine: u16,
    is_64: bool,
    interpreter: Option<String>,
    needed: Vec<String>,
    rpaths: Vec<String>,
    runpaths: Vec<String>,
    /// (library, versions) it needs, weak references left out.
    verneed: Vec<(String, Vec<String>)>,
    soname: Option<String>,
}

impl ElfInfo {
    /// `None` for non-ELF files and ELF files that are neither executables
    /// nor shared objects.
    fn parse(rel: PathBuf, bytes: &[u8]) -> Result<Option<ElfInfo>, String> {
        if !bytes.starts_with(b"\x7fELF") {
            return Ok(None);
        }
        let elf = Elf::parse(bytes).map_err(|e| e.to_string())?;
        if elf.header.e_type != ET_EXEC && elf.header.e_type != ET_DYN {
            return Ok(None);
        }
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let mut verneed = Vec::new();
        if let Some(sec) = &elf.verneed {
            for need in sec.iter() {
                let Some(lib) = elf.dynstrtab.get_at(need.vn_file) else {
                    continue;
                };
                let versions: Vec<String> = need
                    .iter()
                    .filter(|aux| aux.vna_flags & VER_FLG_WEAK == 0)
                    .filter_map(|aux| elf.dynstrtab.get_at(aux.vna_name))
                    .map(str::to_owned)
                    .collect();
                verneed.push((lib.to_owned(), versions));
            }
        }
        Ok(Some(ElfInfo {
            rel,
            machine: elf.header.e_machine,
            is_64: elf.header.e_ident[EI_CLASS] == ELFCLASS64,
            interpreter: elf.interpreter.map(str::to_owned),
            needed: own(&elf.libraries),
            rpaths: own(&elf.rpaths)
                .iter()
                .flat_map(|s| split_paths(s))
                .collect(),
            runpaths: own(&elf.runpaths)
                .iter()
                .flat_map(|s| split_paths(s))
                .collect(),
            verneed,
            soname: elf.soname.map(str::to_owned),
        }))
    }

    /// Where the file will be in the image.
    fn image_path(&self) -> PathBuf {
        Path::new(INSTALL_DIR).join(&self.rel)
    }
}

fn split_paths(s: &str) -> Vec<String> {
    s.split(':')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `$ORIGIN` / `${ORIGIN}` replaced by the directory of the file in the image.
fn expand_origin(dir: &str, origin: &Path) -> PathBuf {
    let origin = origin.to_string_lossy();
    let expanded = dir
        .replace("${ORIGIN}", &origin)
        .replace("$ORIGIN", &origin);
    let p = PathBuf::from(expanded);
    if p.is_absolute() {
        p
    } else {
        // Relative search paths are relative to the working directory.
        Path::new(INSTALL_DIR).join(p)
    }
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}

/// A parsed version suffix (`GLIBC_2.3.4` → (`GLIBC_`, [2, 3, 4])).
fn version_parts(v: &str) -> Option<(&str, Vec<u64>)> {
    let cut = v.rfind('_')? + 1;
    let nums: Option<Vec<u64>> = v[cut..].split('.').map(|n| n.parse().ok()).collect();
    Some((&v[..cut], nums?))
}

/// The newest version of `wanted`'s family (`GLIBC_`) among `defined`.
fn newest_of_family(defined: &[String], wanted: &str) -> Option<String> {
    let (family, _) = version_parts(wanted)?;
    defined
        .iter()
        .filter_map(|d| {
            version_parts(d)
                .filter(|(f, _)| *f == family)
                .map(|(_, n)| (n, d))
        })
        .max()
        .map(|(_, d)| d.clone())
}

/// Check `release` against the base image's files; `base_platform` is the
/// base image's platform. Never fails: what is wrong is in the report.
pub fn check(release: &Release, base: &BaseRootfs, base_platform: &Platform) -> PreflightReport {
    let erts_platform = release.platform();
    let beam = PathBuf::from(format!("erts-{}/bin/beam.smp", release.erts_version()));
    if !erts_platform.satisfies(base_platform) {
        // Library lookups for the wrong machine would only mislead.
        return PreflightReport {
            problems: vec![Problem {
                file: beam,
                kind: ProblemKind::PlatformMismatch {
                    release: erts_platform.clone(),
                    base: base_platform.clone(),
                },
            }],
            files_checked: 0,
        };
    }

    let root = release.root();
    let mut problems = Vec::new();
    let mut elfs = Vec::new();
    release.for_each_elf_candidate(&mut |path| {
        if !is_elf(path) {
            return;
        }
        let rel = path.strip_prefix(root).unwrap_or(path).to_owned();
        let parsed = fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| ElfInfo::parse(rel.clone(), &bytes));
        match parsed {
            Ok(Some(info)) => elfs.push(info),
            Ok(None) => {}
            Err(reason) => problems.push(Problem {
                file: rel,
                kind: ProblemKind::Unreadable { reason },
            }),
        }
    });

    let view = ImageView {
        base,
        app: Some(root),
    };
    let mut default_dirs: Vec<PathBuf> = base.ld_conf_dirs();
    if let Some(t) = triplet(base_platform) {
        default_dirs.push(PathBuf::from(format!("/lib/{t}")));
        default_dirs.push(PathBuf::from(format!("/usr/lib/{t}")));
    }
    for d in ["/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/local/lib"] {
        default_dirs.push(PathBuf::from(d));
    }
    // Libraries the release ships: found by file name or soname, as one
    // NIF loading another's library by path makes it available by soname.
    let mut shipped: HashMap<String, PathBuf> = HashMap::new();
    for e in &elfs {
        let path = e.image_path();
        if let Some(name) = path.file_name() {
            shipped
                .entry(name.to_string_lossy().into_owned())
                .or_insert_with(|| path.clone());
        }
        if let Some(s) = &e.soname {
            shipped.entry(s.clone()).or_insert(path);
        }
    }

    for e in &elfs {
        let file = e.rel.clone();
        let mut problem = |kind| {
            problems.push(Problem {
                file: file.clone(),
                kind,
            })
        };
        match Platform::from_elf_machine(e.machine, e.is_64) {
            Some(p) if p.satisfies(erts_platform) => {}
            found => {
                problem(ProblemKind::WrongArchitecture {
                    found: found
                        .map_or_else(|| format!("ELF machine {}", e.machine), |p| p.to_string()),
                    expected: erts_platform.clone(),
                });
                continue;
            }
        }
        if let Some(interp) = &e.interpreter {
            if view.resolve_file(Path::new(interp)).is_none() {
                problem(ProblemKind::MissingLoader {
                    path: interp.clone(),
                    package: debian_package(interp),
                });
            }
        }
        let origin = e
            .image_path()
            .parent()
            .map(Path::to_owned)
            .unwrap_or_default();
        let search: Vec<PathBuf> = (if e.runpaths.is_empty() {
            &e.rpaths
        } else {
            &e.runpaths
        })
        .iter()
        .map(|d| expand_origin(d, &origin))
        .chain(default_dirs.iter().cloned())
        .chain(std::iter::once(origin.clone()))
        .collect();
        let mut found: HashMap<&str, PathBuf> = HashMap::new();
        for lib in &e.needed {
            let hit = if lib.contains('/') {
                view.resolve_file(&expand_origin(lib, &origin))
            } else {
                search
                    .iter()
                    .find_map(|d| view.resolve_file(&d.join(lib)))
                    .or_else(|| shipped.get(lib.as_str()).cloned())
            };
            match hit {
                Some(p) => {
                    found.insert(lib.as_str(), p);
                }
                None => problem(ProblemKind::MissingLibrary {
                    library: lib.clone(),
                    package: debian_package(lib),
                }),
            }
        }
        for (lib, versions) in &e.verneed {
            let Some(at) = found.get(lib.as_str()) else {
                continue; // missing altogether: reported above
            };
            let Some(defined) = view.verdefs(at) else {
                continue;
            };
            for v in versions {
                if !defined.iter().any(|d| d == v) {
                    problem(ProblemKind::MissingVersion {
                        library: lib.clone(),
                        version: v.clone(),
                        newest: newest_of_family(&defined, v),
                        package: debian_package(lib),
                    });
                }
            }
        }
    }
    problems.sort_by(|a, b| a.file.cmp(&b.file));
    PreflightReport {
        problems,
        files_checked: elfs.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use tar::{EntryType, Header};

    use crate::release::tests::fake_release;

    enum E<'a> {
        Dir(&'a str),
        File(&'a str, Vec<u8>),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
    }

    fn layer_tar(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = Header::new_gnu();
            h.set_mode(0o755);
            match e {
                E::Dir(p) => {
                    h.set_entry_type(EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, p, io::empty()).unwrap();
                }
                E::File(p, data) => {
                    h.set_entry_type(EntryType::Regular);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, p, data.as_slice()).unwrap();
                }
                E::Symlink(p, t) => {
                    h.set_entry_type(EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, p, t).unwrap();
                }
                E::HardLink(p, t) => {
                    h.set_entry_type(EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, p, t).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    /// gzip in two members, as some registries' layers are.
    fn two_member_gzip(tar: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (a, b) = tar.split_at(tar.len() / 2);
        for part in [a, b] {
            let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
            gz.write_all(part).unwrap();
            out.extend(gz.finish().unwrap());
        }
        out
    }

    fn rootfs(layers: &[Vec<u8>]) -> BaseRootfs {
        BaseRootfs::from_layers(layers.iter().map(|l| (l.as_slice(), false))).unwrap()
    }

    fn host_triplet() -> &'static str {
        triplet(&Platform::host()).unwrap()
    }

    fn glob_one(dir: &str, prefix: &str, rest: &str) -> Option<PathBuf> {
        let mut hits: Vec<PathBuf> = fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| e.path().join(rest))
            .filter(|p| p.is_file())
            .collect();
        hits.sort();
        hits.pop()
    }

    /// The host's real ERTS emulator and crypto NIF.
    fn host_erlang() -> Option<(PathBuf, PathBuf)> {
        let beam = glob_one("/usr/lib/erlang", "erts-", "bin/beam.smp")?;
        let crypto = glob_one("/usr/lib/erlang/lib", "crypto-", "priv/lib/crypto.so")?;
        Some((beam, crypto))
    }

    /// A release with the host's real beam.smp and crypto.so in it.
    fn release_with_real_elfs(dir: &Path, crypto_bytes: Option<Vec<u8>>) -> Option<Release> {
        let Some((beam, crypto)) = host_erlang() else {
            eprintln!("no Erlang in /usr/lib/erlang: skipping");
            return None;
        };
        let root = fake_release(dir, &[("kernel", "8.5.3"), ("crypto", "5.1.2")]);
        fs::copy(&beam, root.join("erts-13.1.5/bin/beam.smp")).unwrap();
        let nif = root.join("lib/crypto-5.1.2/priv/lib/crypto.so");
        fs::create_dir_all(nif.parent().unwrap()).unwrap();
        match crypto_bytes {
            Some(b) => fs::write(&nif, b).unwrap(),
            None => {
                fs::copy(&crypto, &nif).unwrap();
            }
        }
        fs::write(root.join("lib/crypto-5.1.2/priv/lib/readme.txt"), "not ELF").unwrap();
        Some(Release::open(&root, &dir.join("scratch"), Default::default()).unwrap())
    }

    fn interpreter_of(path: &Path) -> String {
        let bytes = fs::read(path).unwrap();
        Elf::parse(&bytes).unwrap().interpreter.unwrap().to_owned()
    }

    /// A merged-/usr Debian-like base from the host's real libraries.
    fn debian_like_base(with_libcrypto: bool) -> Vec<u8> {
        let t = host_triplet();
        let host_lib = |name: &str| fs::read(format!("/lib/{t}/{name}")).ok();
        let libdir = format!("usr/lib/{t}");
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for name in [
            "libc.so.6",
            "libm.so.6",
            "libstdc++.so.6",
            "libgcc_s.so.1",
            "libtinfo.so.6",
            "libpthread.so.0",
            "libdl.so.2",
            "librt.so.1",
            "libutil.so.1",
            "libsystemd.so.0",
        ] {
            if let Some(bytes) = host_lib(name) {
                files.push((format!("{libdir}/{name}"), bytes));
            }
        }
        files.push((
            format!("{libdir}/libz.so.1.2.13"),
            host_lib("libz.so.1").unwrap(),
        ));
        if with_libcrypto {
            files.push((
                format!("{libdir}/libcrypto.so.3"),
                host_lib("libcrypto.so.3").unwrap(),
            ));
        }
        let (beam, _) = host_erlang().unwrap();
        // /lib64/ld-linux-x86-64.so.2 → usr/lib64/… (lib64 is a symlink).
        let loader = format!("usr{}", interpreter_of(&beam));
        let mut entries = vec![
            E::Dir("./"),
            E::Symlink("lib", "usr/lib"),
            E::Symlink("lib64", "usr/lib64"),
            E::Dir("usr/"),
            E::Dir("usr/lib/"),
            E::Dir("usr/lib64/"),
            E::File(&loader, b"loader".to_vec()),
            E::Symlink("usr/lib/libz-chain.so", "x/../libz.so.1"),
        ];
        let zlink = format!("{libdir}/libz.so.1");
        entries.push(E::Symlink(&zlink, "libz.so.1.2.13"));
        for (p, b) in &files {
            entries.push(E::File(p, b.clone()));
        }
        layer_tar(&entries)
    }

    #[test]
    fn the_real_beam_and_crypto_nif_pass_on_a_base_with_their_libraries() {
        let tmp = tempfile::tempdir().unwrap();
        let Some(release) = release_with_real_elfs(tmp.path(), None) else {
            return;
        };
        let base = rootfs(&[debian_like_base(true)]);
        let report = check(&release, &base, &Platform::host());
        assert!(report.is_ok(), "{report}");
        assert_eq!(
            report.files_checked, 2,
            "beam.smp and crypto.so; the text file skipped"
        );
        assert!(report.into_result("base").is_ok());
    }

    #[test]
    fn without_libcrypto_the_crypto_nif_is_named_with_the_libssl3_package() {
        let tmp = tempfile::tempdir().unwrap();
        let Some(release) = release_with_real_elfs(tmp.path(), None) else {
            return;
        };
        let base = rootfs(&[debian_like_base(false)]);
        let report = check(&release, &base, &Platform::host());
        assert_eq!(
            report.problems,
            [Problem {
                file: PathBuf::from("lib/crypto-5.1.2/priv/lib/crypto.so"),
                kind: ProblemKind::MissingLibrary {
                    library: "libcrypto.so.3".into(),
                    package: Some("libssl3"),
                },
            }]
        );
        assert_eq!(report.packages(), ["libssl3"]);
        let text = report.to_string();
        assert!(
            text.contains(
                "lib/crypto-5.1.2/priv/lib/crypto.so: needs libcrypto.so.3 (Debian package libssl3), not found in the base image"
            ),
            "{text}"
        );
        assert!(text.contains("apt-get install -y --no-install-recommends libssl3"));
        let err = report.into_result("debian:bookworm-slim").unwrap_err();
        assert!(matches!(err, PreflightError::Failed(_)));
        assert_eq!(err.exit_code(), crate::error::ExitCode::Preflight);
    }

    #[test]
    fn a_whiteout_in_an_upper_gzip_layer_removes_a_library_of_a_lower_one() {
        let tmp = tempfile::tempdir().unwrap();
        let Some(release) = release_with_real_elfs(tmp.path(), None) else {
            return;
        };
        let wh = format!("usr/lib/{}/.wh.libcrypto.so.3", host_triplet());
        let upper = layer_tar(&[E::File(&wh, Vec::new())]);
        let layers = [
            (two_member_gzip(&debian_like_base(true)), true),
            (two_member_gzip(&upper), true),
        ];
        let base =
            BaseRootfs::from_layers(layers.iter().map(|(l, gz)| (l.as_slice(), *gz))).unwrap();
        let report = check(&release, &base, &Platform::host());
        assert_eq!(report.packages(), ["libssl3"], "{report}");
    }

    #[test]
    fn an_opaque_directory_hides_only_what_lower_layers_put_in_it() {
        let lower = layer_tar(&[
            E::File("usr/lib/a.so", vec![]),
            E::File("usr/lib/sub/b.so", vec![]),
            E::File("usr/keep", vec![]),
        ]);
        // The new file comes before the marker: order within a layer must not matter.
        let upper = layer_tar(&[
            E::File("usr/lib/c.so", vec![]),
            E::File("usr/lib/.wh..wh..opq", vec![]),
        ]);
        let fs = rootfs(&[lower, upper]);
        assert!(!fs.exists(Path::new("/usr/lib/a.so")));
        assert!(!fs.exists(Path::new("/usr/lib/sub/b.so")));
        assert!(fs.exists(Path::new("/usr/lib/c.so")));
        assert!(fs.exists(Path::new("/usr/lib")));
        assert!(fs.exists(Path::new("/usr/keep")));
    }

    #[test]
    fn whiteouts_remove_whole_directories_and_files_replace_directories() {
        let lower = layer_tar(&[
            E::File("opt/tool/bin/x", vec![]),
            E::File("srv/data/y", vec![]),
        ]);
        let upper = layer_tar(&[E::File("opt/.wh.tool", vec![]), E::File("srv/data", vec![])]);
        let fs = rootfs(&[lower, upper]);
        assert!(!fs.exists(Path::new("/opt/tool")));
        assert!(!fs.exists(Path::new("/opt/tool/bin/x")));
        assert!(fs.resolve_file(Path::new("/srv/data")).is_some());
        assert!(!fs.exists(Path::new("/srv/data/y")));
    }

    #[test]
    fn symlink_chains_resolve_absolutely_and_relatively_and_loops_end() {
        let fs = rootfs(&[layer_tar(&[
            E::Symlink("lib", "usr/lib"),
            E::File("usr/lib/t/libz.so.1.2.13", vec![]),
            E::Symlink("usr/lib/t/libz.so.1", "libz.so.1.2.13"),
            E::Symlink("usr/lib/abs.so", "/lib/t/libz.so.1"),
            E::Symlink("usr/lib/up.so", "../lib/t/./libz.so.1"),
            E::HardLink("usr/lib/hard.so", "usr/lib/t/libz.so.1.2.13"),
            E::Symlink("loop/a", "b"),
            E::Symlink("loop/b", "a"),
            E::Symlink("dangling", "/nowhere"),
        ])]);
        let target = Some(PathBuf::from("/usr/lib/t/libz.so.1.2.13"));
        assert_eq!(fs.resolve_file(Path::new("/lib/t/libz.so.1")), target);
        assert_eq!(fs.resolve_file(Path::new("/usr/lib/abs.so")), target);
        assert_eq!(fs.resolve_file(Path::new("/lib/up.so")), target);
        assert_eq!(
            fs.resolve_file(Path::new("/lib/hard.so")),
            Some(PathBuf::from("/usr/lib/hard.so"))
        );
        assert_eq!(fs.resolve_file(Path::new("/loop/a")), None);
        assert_eq!(fs.resolve_file(Path::new("/dangling")), None);
        assert_eq!(fs.resolve_file(Path::new("/lib/t/libz.so.1/x")), None);
        assert_eq!(fs.resolve_file(Path::new("/lib")), None, "a directory");
    }

    /// `bytes` with every NUL-delimited `from` replaced by `to` (same length).
    fn patch_string(bytes: &mut [u8], from: &str, to: &str) -> usize {
        assert_eq!(from.len(), to.len());
        let needle = [b"\0", from.as_bytes(), b"\0"].concat();
        let mut n = 0;
        let mut i = 0;
        while i + needle.len() <= bytes.len() {
            if bytes[i..i + needle.len()] == needle[..] {
                bytes[i + 1..i + 1 + to.len()].copy_from_slice(to.as_bytes());
                n += 1;
            }
            i += 1;
        }
        n
    }

    #[test]
    fn a_glibc_version_the_base_does_not_define_is_a_problem() {
        let Some((_, crypto)) = host_erlang() else {
            return;
        };
        let mut bytes = fs::read(&crypto).unwrap();
        let info = ElfInfo::parse(PathBuf::new(), &bytes).unwrap().unwrap();
        let wanted = info
            .verneed
            .iter()
            .find(|(lib, _)| lib == "libc.so.6")
            .and_then(|(_, v)| v.iter().find(|v| v.starts_with("GLIBC_2.")))
            .unwrap()
            .clone();
        // GLIBC_2.14 → GLIBC_2.99: same length, so the ELF stays valid.
        let future: String = wanted
            .chars()
            .enumerate()
            .map(|(i, c)| if i > 8 && c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_ne!(future, wanted);
        assert!(patch_string(&mut bytes, &wanted, &future) > 0);

        let tmp = tempfile::tempdir().unwrap();
        let release = release_with_real_elfs(tmp.path(), Some(bytes)).unwrap();
        let base = rootfs(&[debian_like_base(true)]);
        let report = check(&release, &base, &Platform::host());
        let [problem] = report.problems.as_slice() else {
            panic!("{report}");
        };
        let ProblemKind::MissingVersion {
            library,
            version,
            newest,
            package,
        } = &problem.kind
        else {
            panic!("{problem}");
        };
        assert_eq!(
            (library.as_str(), version, *package),
            ("libc.so.6", &future, Some("libc6"))
        );
        assert!(
            newest.as_deref().is_some_and(|n| n.starts_with("GLIBC_2.")),
            "{newest:?}"
        );
        assert!(
            problem
                .to_string()
                .contains(&format!("needs {future} from libc.so.6"))
        );
    }

    #[test]
    fn a_nif_built_for_another_machine_is_named() {
        let Some((_, crypto)) = host_erlang() else {
            return;
        };
        let mut bytes = fs::read(&crypto).unwrap();
        let other: u16 = if Platform::host().architecture == "arm64" {
            62
        } else {
            183
        };
        bytes[18..20].copy_from_slice(&other.to_le_bytes());
        let tmp = tempfile::tempdir().unwrap();
        let release = release_with_real_elfs(tmp.path(), Some(bytes)).unwrap();
        let report = check(
            &release,
            &rootfs(&[debian_like_base(true)]),
            &Platform::host(),
        );
        assert!(
            matches!(
                report.problems.as_slice(),
                [Problem {
                    kind: ProblemKind::WrongArchitecture { .. },
                    ..
                }]
            ),
            "{report}"
        );
    }

    #[test]
    fn an_erts_for_another_platform_than_the_base_is_a_platform_mismatch() {
        let tmp = tempfile::tempdir().unwrap();
        let Some(release) = release_with_real_elfs(tmp.path(), None) else {
            return;
        };
        let other = Platform::linux(if Platform::host().architecture == "arm64" {
            "amd64"
        } else {
            "arm64"
        });
        let report = check(&release, &rootfs(&[debian_like_base(true)]), &other);
        assert_eq!(report.problems.len(), 1, "{report}");
        let err = report.into_result("debian").unwrap_err();
        assert!(
            matches!(err, PreflightError::PlatformMismatch { .. }),
            "{err}"
        );
    }

    #[test]
    fn origin_in_search_paths_is_the_files_directory_in_the_image() {
        let origin = Path::new("/app/lib/x-1/priv");
        assert_eq!(
            expand_origin("$ORIGIN/../lib", origin),
            Path::new("/app/lib/x-1/priv/../lib")
        );
        assert_eq!(expand_origin("${ORIGIN}", origin), origin);
        assert_eq!(expand_origin("/opt/lib", origin), Path::new("/opt/lib"));
        assert_eq!(expand_origin("vendor", origin), Path::new("/app/vendor"));
    }

    #[test]
    fn release_files_are_seen_at_app_with_their_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let app = tmp.path();
        fs::create_dir_all(app.join("lib/x/priv")).unwrap();
        fs::write(app.join("lib/x/priv/libdep.so.1"), "").unwrap();
        std::os::unix::fs::symlink("libdep.so.1", app.join("lib/x/priv/libdep.so")).unwrap();
        let base = rootfs(&[layer_tar(&[E::Symlink(
            "opt/dep.so",
            "/app/lib/x/priv/libdep.so",
        )])]);
        let view = ImageView {
            base: &base,
            app: Some(app),
        };
        let want = Some(PathBuf::from("/app/lib/x/priv/libdep.so.1"));
        assert_eq!(
            view.resolve_file(Path::new("/app/lib/x/priv/libdep.so")),
            want
        );
        assert_eq!(view.resolve_file(Path::new("/opt/dep.so")), want);
        assert_eq!(
            view.resolve_file(Path::new("/app/lib/x/priv/../priv/libdep.so")),
            want
        );
    }

    #[test]
    fn debian_packages_are_known_for_common_libraries() {
        assert_eq!(debian_package("libcrypto.so.3"), Some("libssl3"));
        assert_eq!(debian_package("libm.so.6"), Some("libc6"));
        assert_eq!(debian_package("/lib64/ld-linux-x86-64.so.2"), Some("libc6"));
        assert_eq!(
            debian_package("libwx_gtk3u_core-3.2.so.0"),
            Some("libwxgtk3.2-1")
        );
        assert_eq!(debian_package("libGLU.so.1"), Some("libgl1"));
        assert_eq!(debian_package("libfoo.so.1"), None);
    }

    // --- the real fixture release on the real debootstrapped bases -------

    /// The layers of a tag of the fixture base layout (`bare`, `runner`),
    /// `None` when it cannot be made here.
    fn fixture_base(tag: &str) -> Option<Vec<(PathBuf, bool)>> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/make-base-layout.sh");
        let out = crate::process::command(&script).output().ok()?;
        if !out.status.success() {
            eprintln!("{} failed: skipping", script.display());
            return None;
        }
        let layout = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim_end());
        let blob = |d: &str| {
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"))
        };
        let json = |p: PathBuf| -> serde_json::Value {
            serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
        };
        let index = json(layout.join("index.json"));
        let manifest = index["manifests"].as_array()?.iter().find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag)
        })?;
        let manifest = json(blob(manifest["digest"].as_str()?));
        manifest["layers"]
            .as_array()?
            .iter()
            .map(|l| {
                Some((
                    blob(l["digest"].as_str()?),
                    crate::image::media::is_gzip_layer(l["mediaType"].as_str()?),
                ))
            })
            .collect()
    }

    #[test]
    fn the_fixture_release_needs_libssl3_on_the_bare_base_and_nothing_on_the_runner() {
        let Some(work) = crate::release::tests::fixture_release(&[]) else {
            return;
        };
        let (Some(bare), Some(runner)) = (fixture_base("bare"), fixture_base("runner")) else {
            return;
        };
        let release = Release::open(
            &work.join("_build/prod/rel/guildhall"),
            &std::env::temp_dir(),
            Default::default(),
        )
        .unwrap();
        let open = |layers: &[(PathBuf, bool)]| {
            BaseRootfs::from_layers(
                layers
                    .iter()
                    .map(|(p, gz)| (io::BufReader::new(File::open(p).unwrap()), *gz)),
            )
            .unwrap()
        };
        let report = check(&release, &open(&bare), &Platform::host());
        assert!(report.files_checked > 5, "{report}");
        assert_eq!(report.packages(), ["libssl3"], "{report}");
        assert!(
            report
                .problems
                .iter()
                .all(|p| p.file.to_string_lossy().starts_with("lib/crypto-")),
            "{report}"
        );
        let report = check(&release, &open(&runner), &Platform::host());
        assert!(report.is_ok(), "{report}");
    }
}
