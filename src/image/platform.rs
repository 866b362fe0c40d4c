//! Platforms (`linux/amd64`, `linux/arm64/v8`) and how they match.

use std::fmt;
use std::str::FromStr;

/// An OS/architecture pair with an optional variant, in OCI/Go spelling.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, `arm`, `386`, `ppc64le`, `s390x`, `riscv64`.
    pub architecture: String,
    /// `v8` for arm64, `v7` for arm, usually absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/<arch>`.
    pub fn linux(architecture: &str) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    /// The platform of an ELF file, from its `e_machine` (and class for the
    /// few machines where it matters). `None` when the tool does not know it.
    pub fn from_elf_machine(machine: u16, is_64: bool) -> Option<Platform> {
        // Values from the ELF specification (elf.h EM_*).
        let arch = match (machine, is_64) {
            (62, true) => "amd64",
            (3, false) => "386",
            (183, true) => "arm64",
            (40, false) => "arm",
            (21, true) => "ppc64le",
            (22, true) => "s390x",
            (243, true) => "riscv64",
            _ => return None,
        };
        Some(Platform::linux(arch))
    }

    /// The platform this binary was compiled for.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform::linux(arch)
    }

    /// Whether an image for `self` runs where `wanted` is asked for. The
    /// variant only counts when both name one (`arm64` and `arm64/v8` match).
    pub fn satisfies(&self, wanted: &Platform) -> bool {
        self.os == wanted.os
            && self.architecture == wanted.architecture
            && match (&self.variant, &wanted.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Why a string is not a platform.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a platform (expected OS/ARCH[/VARIANT], e.g. linux/amd64)")]
pub struct PlatformParseError(pub String);

impl FromStr for Platform {
    type Err = PlatformParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: None,
            }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Ok(Platform {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: Some((*v).into()),
            }),
            _ => Err(PlatformParseError(s.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm64_matches_arm64_v8_but_not_amd64() {
        let a: Platform = "linux/arm64".parse().unwrap();
        let b: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(a.satisfies(&b) && b.satisfies(&a));
        assert!(!a.satisfies(&Platform::linux("amd64")));
    }

    #[test]
    fn elf_machines_map_to_oci_architectures() {
        assert_eq!(
            Platform::from_elf_machine(62, true),
            Some(Platform::linux("amd64"))
        );
        assert_eq!(
            Platform::from_elf_machine(183, true),
            Some(Platform::linux("arm64"))
        );
        assert_eq!(Platform::from_elf_machine(9999, true), None);
    }
}
