//! PAX sparse files (GNU tar `--sparse --format=posix`, formats 0.1 and
//! 1.0): the real name and map from the PAX keys or the data, chunks written
//! at their offsets with holes between; format 0.0 refused.

#[allow(unused_imports)]
use super::*;

/// A sparse file as PAX keys describe it (GNU formats 0.1 and 1.0).
#[derive(Debug)]
pub(super) struct PaxSparse {
    /// `GNU.sparse.name`: the file's real path.
    pub(super) name: Option<PathBuf>,
    /// `GNU.sparse.realsize` (or `.size`): its size with the holes.
    pub(super) real_size: u64,
    /// Format 0.1: the map from `GNU.sparse.map`; `None` for 1.0, whose map
    /// opens the entry's data.
    pub(super) map: Option<Vec<(u64, u64)>>,
}

/// The PAX sparse description of an entry, if it has one. Format 0.0
/// (repeated `offset`/`numbytes` keys) is refused: no tool in use writes it.
pub(super) fn pax_sparse<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Option<PaxSparse>> {
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

pub(super) enum SparseError {
    Read(io::Error),
    Write(io::Error),
    Bad(String),
}

/// Write a PAX sparse entry's data chunks at their offsets (`write(offset,
/// bytes)` into a region of `sp.real_size` zeros), leaving holes.
pub(super) fn write_pax_sparse<R: Read>(
    entry: &mut R,
    sp: &PaxSparse,
    buf: &mut [u8],
    write: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
) -> Result<(), SparseError> {
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
        let mut at = offset;
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = entry.read(&mut buf[..want]).map_err(SparseError::Read)?;
            if n == 0 {
                return Err(SparseError::Read(io::ErrorKind::UnexpectedEof.into()));
            }
            write(at, &buf[..n]).map_err(SparseError::Write)?;
            at += n as u64;
            left -= n as u64;
        }
    }
    Ok(())
}
