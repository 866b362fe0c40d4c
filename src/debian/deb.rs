//! Reading a `.deb`: the `ar` archive (`debian-binary`, `control.tar.*`,
//! `data.tar.*`), its control files (read whole: they are small), and its
//! `data.tar` as a stream through a pure-Rust decompressor (gzip on
//! zlib-rs, xz on `lzma-rust2`, zstd on `ruzstd`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::deb822::{self, Paragraph};
use super::error::DebianError;

/// Control members larger than this are refused (real ones are KiBs).
const MAX_CONTROL: u64 = 16 << 20;
const AR_MAGIC: &[u8; 8] = b"!<arch>\n";

/// A compression a Debian archive member or index uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// None.
    None,
    /// gzip.
    Gzip,
    /// xz.
    Xz,
    /// zstd.
    Zstd,
}

impl Compression {
    /// From a file name's extension (`data.tar.xz`, `Packages.gz`).
    pub fn of_name(name: &str) -> Option<Compression> {
        if name.ends_with(".gz") {
            Some(Compression::Gzip)
        } else if name.ends_with(".xz") {
            Some(Compression::Xz)
        } else if name.ends_with(".zst") {
            Some(Compression::Zstd)
        } else if name.ends_with(".bz2") || name.ends_with(".lzma") {
            None
        } else {
            Some(Compression::None)
        }
    }

    /// `reader`, decompressed.
    pub fn reader<'a, R: Read + Send + 'a>(
        self,
        reader: R,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Compression::None => Box::new(reader),
            Compression::Gzip => {
                Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(reader)))
            }
            Compression::Xz => Box::new(lzma_rust2::XzReader::new(BufReader::new(reader), true)),
            Compression::Zstd => Box::new(
                ruzstd::decoding::StreamingDecoder::new(BufReader::new(reader))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
            ),
        })
    }
}

/// What the control archive of a package holds.
#[derive(Clone, Debug)]
pub struct Control {
    /// The `control` paragraph.
    pub control: Paragraph,
    /// `md5sums`, as written (may be empty).
    pub md5sums: String,
    /// `conffiles`, as written (may be empty).
    pub conffiles: String,
    /// Maintainer scripts and other control files (`postinst`,
    /// `triggers`, …) by name, as text.
    pub scripts: BTreeMap<String, String>,
}

/// A `.deb` on disk: its control files, and where its data archive is.
#[derive(Clone, Debug)]
pub struct Deb {
    /// The control files.
    pub control: Control,
    data_offset: u64,
    data_size: u64,
    data_compression: Compression,
}

struct Member {
    name: String,
    offset: u64,
    size: u64,
}

fn bad(what: &str, reason: impl Into<String>) -> DebianError {
    DebianError::Deb {
        package: what.to_owned(),
        reason: reason.into(),
    }
}

fn ar_members(file: &mut File, what: &str) -> Result<Vec<Member>, DebianError> {
    let len = file
        .metadata()
        .map_err(|e| bad(what, format!("reading: {e}")))?
        .len();
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)
        .map_err(|_| bad(what, "not an ar archive (too short)"))?;
    if &magic != AR_MAGIC {
        return Err(bad(what, "not an ar archive (no !<arch> magic)"));
    }
    let mut pos = 8u64;
    let mut out = Vec::new();
    while pos < len {
        let mut h = [0u8; 60];
        file.read_exact(&mut h)
            .map_err(|_| bad(what, format!("ar header at byte {pos} is cut short")))?;
        if &h[58..60] != b"`\n" {
            return Err(bad(what, format!("ar header at byte {pos} is corrupt")));
        }
        let name = String::from_utf8_lossy(&h[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_owned();
        let size: u64 = std::str::from_utf8(&h[48..58])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| bad(what, format!("ar member {name:?} has no size")))?;
        let offset = pos + 60;
        if offset + size > len {
            return Err(bad(
                what,
                format!("ar member {name:?} runs past the end of the file"),
            ));
        }
        out.push(Member { name, offset, size });
        pos = offset + size + (size & 1);
        file.seek(SeekFrom::Start(pos))
            .map_err(|e| bad(what, format!("reading: {e}")))?;
    }
    Ok(out)
}

impl Deb {
    /// Open `path`; `what` names the package in errors
    /// (`libssl3 3.0.20-1~deb12u2`).
    pub fn open(path: &Path, what: &str) -> Result<Deb, DebianError> {
        let mut file = File::open(path).map_err(DebianError::io("opening", path))?;
        let members = ar_members(&mut file, what)?;
        let first = members
            .first()
            .ok_or_else(|| bad(what, "an empty ar archive"))?;
        if first.name != "debian-binary" {
            return Err(bad(what, "the first member is not debian-binary"));
        }
        let mut version = String::new();
        file.seek(SeekFrom::Start(first.offset))
            .and_then(|_| {
                (&mut file)
                    .take(first.size.min(64))
                    .read_to_string(&mut version)
            })
            .map_err(|e| bad(what, format!("reading debian-binary: {e}")))?;
        if !version.trim_end().starts_with("2.") {
            return Err(bad(what, format!("format {:?} is not 2.x", version.trim())));
        }
        let find = |prefix: &str| {
            members
                .iter()
                .find(|m| m.name == prefix || m.name.starts_with(&format!("{prefix}.")))
        };
        let ctl = find("control.tar").ok_or_else(|| bad(what, "no control.tar member"))?;
        let data = find("data.tar").ok_or_else(|| bad(what, "no data.tar member"))?;
        let comp_of = |m: &Member| {
            Compression::of_name(&m.name)
                .ok_or_else(|| bad(what, format!("{}: unsupported compression", m.name)))
        };
        let ctl_comp = comp_of(ctl)?;
        let data_compression = comp_of(data)?;
        if ctl.size > MAX_CONTROL {
            return Err(bad(what, "control.tar is implausibly large"));
        }
        file.seek(SeekFrom::Start(ctl.offset))
            .map_err(|e| bad(what, format!("reading: {e}")))?;
        let control = read_control(ctl_comp, (&mut file).take(ctl.size), what)?;
        Ok(Deb {
            control,
            data_offset: data.offset,
            data_size: data.size,
            data_compression,
        })
    }

    /// The uncompressed `data.tar`, streamed from `path` (the file `open`
    /// read).
    pub fn data(&self, path: &Path) -> Result<Box<dyn Read + Send>, DebianError> {
        let mut file = File::open(path).map_err(DebianError::io("opening", path))?;
        file.seek(SeekFrom::Start(self.data_offset))
            .map_err(DebianError::io("reading", path))?;
        self.data_compression
            .reader(file.take(self.data_size))
            .map_err(DebianError::io("decompressing", path))
    }
}

fn read_control<R: Read + Send>(
    comp: Compression,
    raw: R,
    what: &str,
) -> Result<Control, DebianError> {
    let reader = comp
        .reader(raw)
        .map_err(|e| bad(what, format!("control.tar: {e}")))?;
    let mut ar = tar::Archive::new(reader.take(MAX_CONTROL));
    let mut files = BTreeMap::new();
    let entries = ar
        .entries()
        .map_err(|e| bad(what, format!("control.tar: {e}")))?;
    for e in entries {
        let mut e = e.map_err(|e| bad(what, format!("control.tar: {e}")))?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        let name = e
            .path()
            .map_err(|e| bad(what, format!("control.tar: {e}")))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes)
            .map_err(|e| bad(what, format!("control.tar: {name}: {e}")))?;
        files.insert(name, String::from_utf8_lossy(&bytes).into_owned());
    }
    let text = files
        .remove("control")
        .ok_or_else(|| bad(what, "control.tar has no control file"))?;
    let control =
        deb822::parse_one(&text).map_err(|e| bad(what, format!("its control file: {e}")))?;
    Ok(Control {
        control,
        md5sums: files.remove("md5sums").unwrap_or_default(),
        conffiles: files.remove("conffiles").unwrap_or_default(),
        scripts: files,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// An ar archive of the given members (a minimal `ar rc`).
    pub(crate) fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = AR_MAGIC.to_vec();
        for (name, data) in members {
            let h = format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                name,
                0,
                0,
                0,
                "100644",
                data.len()
            );
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    /// A gzip'd tar of (path, bytes) regular files.
    pub(crate) fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn a_deb_gives_its_control_files_and_streams_its_data() {
        let control = tar_gz(&[
            (
                "./control",
                b"Package: hello\nVersion: 1.0\nArchitecture: all\n",
            ),
            ("./md5sums", b"abc  usr/bin/hello\n"),
            ("./postinst", b"#!/bin/sh\nexit 0\n"),
        ]);
        let data = tar_gz(&[("./usr/bin/hello", b"#!/bin/sh\necho hi\n")]);
        let deb = ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", &control),
            ("data.tar.gz", &data),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hello.deb");
        File::create(&p).unwrap().write_all(&deb).unwrap();
        let d = Deb::open(&p, "hello 1.0").unwrap();
        assert_eq!(d.control.control.get("Package"), Some("hello"));
        assert!(d.control.md5sums.contains("usr/bin/hello"));
        assert_eq!(d.control.scripts.keys().collect::<Vec<_>>(), ["postinst"]);
        let mut ar = tar::Archive::new(d.data(&p).unwrap());
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["usr/bin/hello"]);
    }

    #[test]
    fn files_that_are_not_debs_are_refused_naming_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.deb");
        for (bytes, want) in [
            (b"hello".to_vec(), "not an ar archive"),
            (
                ar(&[("other", b"x")]),
                "the first member is not debian-binary",
            ),
            (ar(&[("debian-binary", b"3.0\n")]), "is not 2.x"),
            (ar(&[("debian-binary", b"2.0\n")]), "no control.tar member"),
        ] {
            std::fs::write(&p, &bytes).unwrap();
            let e = Deb::open(&p, "x 1.0").unwrap_err().to_string();
            assert!(e.starts_with("x 1.0: ") && e.contains(want), "{e}");
        }
        let mut cut = ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", b"0123456789"),
        ]);
        cut.truncate(cut.len() - 4);
        std::fs::write(&p, &cut).unwrap();
        let e = Deb::open(&p, "x 1.0").unwrap_err().to_string();
        assert!(e.contains("runs past the end"), "{e}");
    }
}
