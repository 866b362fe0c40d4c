//! What preflight reads from an ELF file: DT_NEEDED, RPATH/RUNPATH, the symbol versions it needs and defines.

#[allow(unused_imports)]
use super::*;

/// What preflight needs of one ELF file of the release.
#[derive(Clone, Debug, Default)]
pub(super) struct ElfInfo {
    /// Relative to the release root.
    pub(super) rel: PathBuf,
    pub(super) machine: u16,
    pub(super) is_64: bool,
    pub(super) interpreter: Option<String>,
    pub(super) needed: Vec<String>,
    pub(super) rpaths: Vec<String>,
    pub(super) runpaths: Vec<String>,
    /// (library, versions) it needs, weak references left out.
    pub(super) verneed: Vec<(String, Vec<String>)>,
    pub(super) soname: Option<String>,
}

impl ElfInfo {
    /// `None` for non-ELF files and ELF files that are neither executables
    /// nor shared objects.
    pub(super) fn parse(rel: PathBuf, bytes: &[u8]) -> Result<Option<ElfInfo>, String> {
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
    pub(super) fn image_path(&self) -> PathBuf {
        Path::new(INSTALL_DIR).join(&self.rel)
    }
}

pub(super) fn split_paths(s: &str) -> Vec<String> {
    s.split(':')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `$ORIGIN` / `${ORIGIN}` replaced by the directory of the file in the image.
pub(super) fn expand_origin(dir: &str, origin: &Path) -> PathBuf {
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

pub(super) fn is_elf(tree: &crate::tree::Tree, path: &Path) -> bool {
    let mut magic = [0u8; 4];
    tree.open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}

/// A parsed version suffix (`GLIBC_2.3.4` → (`GLIBC_`, [2, 3, 4])).
pub(super) fn version_parts(v: &str) -> Option<(&str, Vec<u64>)> {
    let cut = v.rfind('_')? + 1;
    let nums: Option<Vec<u64>> = v[cut..].split('.').map(|n| n.parse().ok()).collect();
    Some((&v[..cut], nums?))
}

/// The newest version of `wanted`'s family (`GLIBC_`) among `defined`.
pub(super) fn newest_of_family(defined: &[String], wanted: &str) -> Option<String> {
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
