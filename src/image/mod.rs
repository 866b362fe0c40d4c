//! The OCI model: digests, descriptors, media types, image config, manifests,
//! references and platforms. Pure data and pure functions: no I/O here.

pub mod config;
pub mod digest;
pub mod manifest;
pub mod media;
pub mod platform;
pub mod reference;

pub use digest::{Digest, DigestWriter, Sha256Hasher};
pub use platform::Platform;
pub use reference::{ImageRef, LayoutRef, RegistryRef};

pub use oci_spec::image::{
    Descriptor, DescriptorBuilder, ImageConfiguration, ImageIndex, ImageManifest, MediaType,
};

/// Serialise any model value as canonical JSON: object keys sorted, no
/// whitespace. oci-spec keeps labels and annotations in `HashMap`s, whose order
/// changes from run to run; going through `serde_json::Value` (a `BTreeMap`)
/// makes the bytes, and so the digest, the same every time.
pub fn canonical_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let value = serde_json::to_value(value).expect("OCI model values serialise to JSON");
    serde_json::to_vec(&value).expect("a JSON value serialises")
}

/// Descriptor for a blob of JSON bytes of the given media type.
pub fn descriptor_for(media_type: MediaType, bytes: &[u8]) -> Descriptor {
    let digest = Digest::of(bytes);
    Descriptor::new(media_type, bytes.len() as u64, digest.to_oci())
}

/// The `Digest` of a descriptor, validated.
pub fn descriptor_digest(desc: &Descriptor) -> Digest {
    Digest::from_oci(desc.digest())
}
