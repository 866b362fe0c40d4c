//! Tests of deterministic layers: byte identity, modes, links, names, memory.

#[allow(unused_imports)]
use super::*;
use std::fs::File;

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
    assert!(crate::compress::looks_incompressible(&random));
    let text = b"defmodule Guildhall.Greeting do\n  def hello, do: :world\nend\n".repeat(20_000);
    assert!(!crate::compress::looks_incompressible(&text));
}

use std::os::unix::fs::PermissionsExt;

use flate2::read::MultiGzDecoder;

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
    let mut ar = tar::Archive::new(MultiGzDecoder::new(gzip));
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
    let cp = crate::process::command("cp")
        .arg("-a")
        .arg(&a)
        .arg(&b)
        .status()
        .unwrap();
    assert!(cp.success());
    let touch = crate::process::command("find")
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
fn every_codec_writes_the_same_bytes_on_one_two_and_three_threads_and_decodes_to_the_diff_id() {
    use crate::compress::Codec;
    let tmp = tempfile::tempdir().unwrap();
    sample_tree(tmp.path());
    let layer = plan_of(tmp.path());
    for codec in [
        Codec::Libdeflate(4),
        Codec::Zlib(6),
        Codec::Zstd(3),
        Codec::Zstd(19),
    ] {
        let opts = |threads| LayerOptions {
            codec,
            ..small_blocks(threads)
        };
        let (s1, one) = gz(&layer, &opts(1));
        for threads in [2, 3] {
            let (s, other) = gz(&layer, &opts(threads));
            assert!(one == other, "{codec:?} on {threads} threads");
            assert_eq!(s, s1);
        }
        let mut tar = Vec::new();
        if codec.is_gzip() {
            MultiGzDecoder::new(one.as_slice())
                .read_to_end(&mut tar)
                .unwrap();
        } else {
            zstd::stream::read::Decoder::new(one.as_slice())
                .unwrap()
                .read_to_end(&mut tar)
                .unwrap();
        }
        assert_eq!(Digest::of(&tar), s1.diff_id, "{codec:?}");
    }
}

#[test]
fn the_blocks_in_flight_fit_the_memory_bound_on_any_number_of_cores() {
    use crate::compress::Codec;
    for codec in [
        Codec::Libdeflate(12),
        Codec::Zlib(9),
        Codec::Zstd(3),
        Codec::Zstd(22),
    ] {
        for cores in [1, 2, 8, 64, 256] {
            let (threads, blocks) = gzip::pipeline_shape(codec, DEFAULT_BLOCK_SIZE, cores);
            assert!(threads >= 1 && threads <= cores, "{codec:?} {cores}");
            // Each block holds its input and output (≤ 2 × its size plus slack).
            let bytes = blocks * (2 * DEFAULT_BLOCK_SIZE + DEFAULT_BLOCK_SIZE / 8);
            assert!(bytes <= gzip::IN_FLIGHT_BYTES, "{codec:?} {cores}: {bytes}");
        }
    }
    // zstd's biggest levels hold ~24 MiB of tables per worker: fewer workers.
    assert!(gzip::pipeline_shape(Codec::Zstd(22), DEFAULT_BLOCK_SIZE, 256).0 <= 2);
    assert!(gzip::pipeline_shape(Codec::Libdeflate(4), DEFAULT_BLOCK_SIZE, 256).0 <= 16);
    assert_eq!(
        gzip::pipeline_shape(Codec::Libdeflate(4), DEFAULT_BLOCK_SIZE, 2).0,
        2,
        "a 2-core machine uses both cores"
    );
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
    assert_eq!(&bytes[..3], &[0x1f, 0x8b, 8]);
    let mut tar = Vec::new();
    // The decoder checks each member's CRC32 and ISIZE.
    MultiGzDecoder::new(bytes.as_slice())
        .read_to_end(&mut tar)
        .unwrap();
    assert_eq!(tar.len() as u64, stats.uncompressed_size);
    assert_eq!(Digest::of(&tar), stats.diff_id);
    assert_eq!(diff_id(&layer, &small_blocks(2)).unwrap(), stats);

    let mut corrupt = bytes.clone();
    let n = corrupt.len();
    corrupt[n - 8] ^= 1;
    assert!(
        MultiGzDecoder::new(corrupt.as_slice())
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
    let Ok(t) = crate::process::command("gzip")
        .arg("-t")
        .arg(&file)
        .status()
    else {
        return;
    };
    assert!(t.success());
    let out = crate::process::command("tar")
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
    let st = crate::process::command("tar")
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
    MultiGzDecoder::new(bytes.as_slice())
        .read_to_end(&mut tar)
        .unwrap();
    assert_eq!(tar.len(), 2 * 65536);
}

#[test]
fn an_empty_layer_is_a_valid_gzip_of_an_empty_tar() {
    let (stats, bytes) = gz(&PlannedLayer::new("e", "e"), &LayerOptions::default());
    assert_eq!((stats.entries, stats.uncompressed_size), (0, 1024));
    let mut tar = Vec::new();
    MultiGzDecoder::new(bytes.as_slice())
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
        Err(LayerError::Io(crate::error::IoError { path, .. })) => {
            assert_eq!(path, tmp.path().join("gone"))
        }
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

/// Runs in a child process of its own (this test binary, re-run with
/// just this test): the peak RSS of a process shared with other tests
/// says nothing about this one.
#[test]
fn a_200_mb_layer_is_written_in_bounded_memory() {
    const CHILD: &str = "GUILDHALL_IMAGE_MEMORY_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let tmp = tempfile::tempdir().unwrap();
        let big = tmp.path().join("big.bin");
        File::create(&big).unwrap().set_len(200 << 20).unwrap(); // sparse
        let mut layer = PlannedLayer::new("big", "big");
        layer.add(&big, "big.bin");
        let before = vm_hwm_kib();
        let (stats, _) = write_layer(&layer, &LayerOptions::default(), io::sink(), None).unwrap();
        assert!(stats.uncompressed_size > 200 << 20);
        #[allow(clippy::disallowed_macros)] // the parent reads it
        {
            println!("grown-kib={}", vm_hwm_kib() - before);
        }
        return;
    }
    let out = crate::process::command(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "layer::tests::a_200_mb_layer_is_written_in_bounded_memory",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let grown_mib: u64 = text
        .lines()
        .find_map(|l| l.split("grown-kib=").nth(1))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no figure in {text}"))
        / 1024;
    // Blocks in flight: 2 per thread, ~2 MiB each; far below the 200 MB.
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
