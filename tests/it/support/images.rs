//! Made-up images for the registry and credential tests: OCI layouts with
//! layers of incompressible bytes of a chosen size, written through the
//! tool's own model and layout, and the client to push them with.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use guildhall_image::credentials::{Chain, CredentialSource};
use guildhall_image::image::config::{ConfigFile, History, RuntimeConfig};
use guildhall_image::image::{Descriptor, Digest, RegistryRef, media, mutate};
use guildhall_image::layout::{Layout, TaggedImage};
use guildhall_image::progress::Progress;
use guildhall_image::registry::{
    Client, ClientOptions, PushOptions, PushReport, PushRequest, RegistryError,
};
use rand::{RngCore, SeedableRng};

/// Client options for tests: fast retries, short timeouts.
pub fn fast_options() -> ClientOptions {
    ClientOptions {
        retry_base_delay: Duration::from_millis(100),
        retry_max_delay: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(10),
        response_timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    }
}

/// A client with these credentials and options.
pub fn client(creds: Arc<dyn CredentialSource>, opts: ClientOptions) -> Client {
    Client::new(creds, opts).expect("a client")
}

/// No credentials.
pub fn anonymous() -> Arc<dyn CredentialSource> {
    Arc::new(Chain::new())
}

/// Push `img` of `layout` to `target` under `tags`.
pub async fn push_image(
    c: &Client,
    layout: &Layout,
    img: &TaggedImage,
    target: &RegistryRef,
    tags: &[String],
    options: &PushOptions,
    progress: &Progress,
) -> Result<PushReport, RegistryError> {
    let image = Descriptor::new(img.media_type.clone(), img.digest.clone(), img.size);
    c.push(PushRequest {
        source: layout,
        image: &image,
        target,
        tags,
        options,
        progress,
    })
    .await
}

/// Push `img` under the tag `v1` with no progress display, within two minutes.
pub async fn push_v1(
    c: &Client,
    layout: &Layout,
    img: &TaggedImage,
    target: &RegistryRef,
    options: &PushOptions,
) -> Result<PushReport, RegistryError> {
    super::within(
        120,
        "the push",
        push_image(
            c,
            layout,
            img,
            target,
            &["v1".into()],
            options,
            &Progress::hidden(),
        ),
    )
    .await
}

/// Deterministic incompressible bytes.
struct Noise {
    rng: rand::rngs::SmallRng,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        self.rng.fill_bytes(&mut buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// An uncompressed tar layer holding one file of `size` noise bytes.
pub fn write_layer(layout: &Layout, size: u64, seed: u64) -> (Digest, u64) {
    let mut w = layout.blob_writer().expect("blob writer");
    {
        let mut b = tar::Builder::new(&mut w);
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let noise = Noise {
            rng: rand::rngs::SmallRng::seed_from_u64(seed),
            left: size,
        };
        b.append_data(&mut h, format!("data-{seed}.bin"), noise)
            .expect("writing a layer");
        b.finish().expect("finishing a layer");
    }
    w.commit(None).expect("committing a layer")
}

/// An image of uncompressed tar layers of the given sizes, tagged `tag` in
/// a new layout under `dir`.
pub fn make_image(dir: &Path, tag: &str, layer_sizes: &[u64], seed: u64) -> (Layout, TaggedImage) {
    make_image_for(dir, tag, layer_sizes, seed, "amd64")
}

/// [`make_image`] for another architecture.
pub fn make_image_for(
    dir: &Path,
    tag: &str,
    layer_sizes: &[u64],
    seed: u64,
    arch: &str,
) -> (Layout, TaggedImage) {
    let layout = Layout::create_or_open(dir).expect("a layout");
    let layers: Vec<Descriptor> = layer_sizes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (d, n) = write_layer(&layout, *s, seed * 1000 + i as u64);
            Descriptor::new(media::OCI_LAYER_TAR, d, n)
        })
        .collect();
    let config = ConfigFile {
        architecture: arch.into(),
        os: "linux".into(),
        config: Some(RuntimeConfig {
            cmd: Some(vec!["/bin/true".into()]),
            labels: Some(
                [(
                    "org.opencontainers.image.source".to_owned(),
                    "https://git.guildhouse.dev/tking/guildhall".to_owned(),
                )]
                .into(),
            ),
            ..RuntimeConfig::default()
        }),
        rootfs: guildhall_image::image::config::RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.digest.to_string()).collect(),
        },
        history: layers
            .iter()
            .map(|_| History {
                created_by: Some("test".into()),
                ..History::default()
            })
            .collect(),
        ..ConfigFile::default()
    };
    let (cd, cs) = layout.write_blob(&config.to_bytes()).expect("config");
    let manifest = mutate::manifest(Descriptor::new(media::OCI_CONFIG, cd, cs), &layers);
    let (md, _) = layout.write_blob(&manifest.to_bytes()).expect("manifest");
    layout
        .set_tags(media::OCI_MANIFEST, &md, &[tag.to_owned()])
        .expect("tagging");
    let img = layout.resolve(Some(tag)).expect("resolving");
    (layout, img)
}

/// The digest of the manifest under `tag` in a layout skopeo wrote.
pub fn layout_digest(dir: &Path, tag: &str) -> Digest {
    Layout::open(dir)
        .expect("a layout")
        .resolve(Some(tag))
        .expect("the tag")
        .digest
}

/// A tiny one-layer gzip image tagged `tag` in `dir/layout` (for tests that
/// push without building).
pub fn tiny_layout(dir: &Path, tag: &str, content: &str) -> PathBuf {
    let path = dir.join("layout");
    let layout = Layout::create_or_open(&path).expect("a layout");
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, "hello.txt", content.as_bytes())
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let (ld, ls) = layout.write_blob(&gz.finish().unwrap()).unwrap();
    let config = ConfigFile {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(RuntimeConfig {
            cmd: Some(vec!["/bin/true".into()]),
            ..RuntimeConfig::default()
        }),
        rootfs: guildhall_image::image::config::RootFs {
            kind: "layers".into(),
            diff_ids: vec![Digest::of(&tar).to_string()],
        },
        history: vec![History {
            created_by: Some("tests".into()),
            ..History::default()
        }],
        ..ConfigFile::default()
    };
    let (cd, cs) = layout.write_blob(&config.to_bytes()).unwrap();
    let m = mutate::manifest(
        Descriptor::new(media::OCI_CONFIG, cd, cs),
        &[Descriptor::new(media::OCI_LAYER_GZIP, ld, ls)],
    );
    let (md, _) = layout.write_blob(&m.to_bytes()).unwrap();
    layout
        .set_tags(media::OCI_MANIFEST, &md, &[tag.to_owned()])
        .unwrap();
    path
}
