//! The codecs' properties: thread-count independence, standard and system
//! decoders, the layer writer's bytes.

use super::*;
use std::io::{Read, Write};

/// Text-like, code-like and incompressible stretches, several blocks long.
fn sample(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut v = Vec::with_capacity(len);
    let words = [
        &b"defmodule "[..],
        b"Guildhall.",
        b"Handler do\n",
        b"  def call(conn, opts), do: ",
        b"{:ok, conn}\n",
        b"end\n",
    ];
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (v.len() / 100_000) % 3 == 2 {
            // a stretch of noise (an image)
            v.extend_from_slice(&x.to_le_bytes());
        } else {
            v.extend_from_slice(words[(x % 6) as usize]);
        }
    }
    v.truncate(len);
    v
}

const BLOCK: usize = 64 * 1024;

fn all_codecs() -> Vec<Codec> {
    vec![
        Codec::Zlib(1),
        Codec::Zlib(6),
        Codec::Libdeflate(1),
        Codec::Libdeflate(6),
        Codec::Zstd(3),
    ]
}

#[test]
fn the_bytes_do_not_depend_on_the_number_of_threads() {
    let input = sample(700_000);
    for codec in all_codecs() {
        let one = compress_in_memory(codec, &input, BLOCK, 1).unwrap();
        for threads in [2, 3, 8] {
            let other = compress_in_memory(codec, &input, BLOCK, threads).unwrap();
            assert!(one == other, "{codec:?} with {threads} threads");
        }
    }
}

#[test]
fn zlib_blocks_make_one_gzip_member_that_flate2_reads_with_its_crc_checked() {
    let input = sample(500_000);
    let gz = compress_in_memory(Codec::Zlib(6), &input, BLOCK, 2).unwrap();
    let mut back = Vec::new();
    // GzDecoder reads one member only: all of it must be in that one.
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == input);
    let mut corrupt = gz.clone();
    let n = corrupt.len();
    corrupt[n - 8] ^= 1;
    assert!(
        flate2::read::GzDecoder::new(corrupt.as_slice())
            .read_to_end(&mut Vec::new())
            .is_err()
    );
}

#[test]
fn every_codec_round_trips_through_the_standard_decoders() {
    let input = sample(600_000);
    for codec in all_codecs() {
        let bytes = compress_in_memory(codec, &input, BLOCK, 2).unwrap();
        let mut back = Vec::new();
        if codec.is_gzip() {
            flate2::read::MultiGzDecoder::new(bytes.as_slice())
                .read_to_end(&mut back)
                .unwrap();
        } else {
            zstd::stream::read::Decoder::new(bytes.as_slice())
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
        }
        assert!(back == input, "{codec:?}");
    }
}

#[test]
fn the_system_gzip_and_zstd_accept_the_streams() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample(400_000);
    for codec in all_codecs() {
        let bytes = compress_in_memory(codec, &input, BLOCK, 2).unwrap();
        let (tool, ext) = if codec.is_gzip() {
            ("gzip", "gz")
        } else {
            ("zstd", "zst")
        };
        let f = tmp.path().join(format!("s.{ext}"));
        std::fs::write(&f, &bytes).unwrap();
        let Ok(t) = crate::process::command(tool)
            .arg("-t")
            .arg("-q")
            .arg(&f)
            .status()
        else {
            panic!("{tool} is not installed (scripts/install-deps.sh)");
        };
        assert!(t.success(), "{tool} -t refused {codec:?}");
        let out = crate::process::command(tool)
            .args(["-d", "-c"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(out.stdout == input, "{tool} -d of {codec:?}");
    }
}

#[test]
fn the_layer_writer_gives_the_same_bytes_as_the_in_memory_driver_for_every_codec() {
    // The layer writer streams what compress_in_memory makes in one go; both
    // must agree, and compress_in_memory does not depend on the threads.
    let input = sample(900_000);
    for codec in all_codecs() {
        let opts = crate::layer::LayerOptions {
            threads: 2,
            block_size: BLOCK,
            codec,
            ..crate::layer::LayerOptions::default()
        };
        let (_, layer) =
            crate::layer::compress_tar_stream("sample", input.as_slice(), &opts, Vec::new(), None)
                .unwrap();
        let ours = compress_in_memory(codec, &input, BLOCK, 3).unwrap();
        assert!(ours == layer, "{codec:?}");
    }
}

#[test]
fn an_empty_stream_is_a_valid_empty_member_or_frame() {
    for codec in all_codecs() {
        let bytes = compress_in_memory(codec, &[], BLOCK, 2).unwrap();
        let mut back = Vec::new();
        if codec.is_gzip() {
            flate2::read::MultiGzDecoder::new(bytes.as_slice())
                .read_to_end(&mut back)
                .unwrap();
        } else {
            zstd::stream::read::Decoder::new(bytes.as_slice())
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
        }
        assert!(back.is_empty(), "{codec:?}");
    }
}

#[test]
fn crc32_combine_agrees_with_hashing_the_concatenation() {
    let input = sample(300_000);
    for split in [0, 1, 4096, 123_457, 300_000] {
        let (a, b) = input.split_at(split);
        assert_eq!(
            crc32_combine(crc32(a), crc32(b), b.len() as u64),
            crc32(&input),
            "split at {split}"
        );
    }
}

#[test]
fn incompressible_blocks_are_stored_not_searched() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    assert!(looks_incompressible(&noise));
    let text = b"defmodule Guildhall.Greeting do\n  def hello, do: :world\nend\n".repeat(20_000);
    assert!(!looks_incompressible(&text));
    for codec in all_codecs() {
        let bytes = compress_in_memory(codec, &noise, 1 << 20, 1).unwrap();
        // Stored: at most a few dozen bytes of framing over the input.
        assert!(
            bytes.len() < noise.len() + 256,
            "{codec:?}: {}",
            bytes.len()
        );
    }
}

#[test]
fn levels_outside_a_codecs_range_and_tiny_blocks_are_refused() {
    for bad in [
        Codec::Zlib(0),
        Codec::Zlib(10),
        Codec::Libdeflate(13),
        Codec::Zstd(0),
        Codec::Zstd(23),
    ] {
        assert!(
            matches!(BlockCompressor::new(bad), Err(CompressError::Level { .. })),
            "{bad:?}"
        );
    }
    assert!(matches!(
        compress_in_memory(Codec::Zlib(6), b"x", 1000, 1),
        Err(CompressError::BlockSize(1000))
    ));
}

#[test]
fn zstd_multithreaded_frames_do_not_depend_on_the_number_of_workers() {
    // Big enough for several jobs at level 1 (job size 4 x window).
    let input = sample(12 << 20);
    let encode = |workers: u32| {
        let mut e = zstd_mt_encoder(Vec::new(), 1, workers).unwrap();
        for chunk in input.chunks(300_000) {
            e.write_all(chunk).unwrap();
        }
        e.finish().unwrap()
    };
    let one = encode(1);
    assert!(one == encode(2));
    assert!(one == encode(4));
    let mut back = Vec::new();
    zstd::stream::read::Decoder::new(one.as_slice())
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == input);
}

#[test]
fn compression_names_parse_to_codecs_and_bad_ones_say_what_is_accepted() {
    assert_eq!("gzip".parse::<Codec>().unwrap(), DEFAULT_GZIP);
    assert_eq!("gzip:9".parse::<Codec>().unwrap(), Codec::Libdeflate(9));
    assert_eq!("zstd".parse::<Codec>().unwrap(), Codec::Zstd(3));
    assert_eq!("zstd:19".parse::<Codec>().unwrap(), Codec::Zstd(19));
    assert_eq!(
        "zstd:19".parse::<Codec>().unwrap().media_type(),
        crate::image::media::OCI_LAYER_ZSTD
    );
    for bad in [
        "brotli", "zstd:0", "zstd:23", "gzip:13", "gzip:-1", "zstd:x", "",
    ] {
        let e = bad.parse::<Codec>().unwrap_err().to_string();
        assert!(
            e.contains("gzip, gzip:1-12, zstd or zstd:1-22"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn every_packing_a_base_may_have_decodes_to_the_same_tar() {
    use crate::image::media;
    let tar: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    // Two gzip members and two zstd frames, as multi-block layers have.
    let (a, b) = tar.split_at(tar.len() / 3);
    let mut gz = Vec::new();
    let mut zs = Vec::new();
    for part in [a, b] {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(part).unwrap();
        gz.extend(e.finish().unwrap());
        zs.extend(zstd::stream::encode_all(part, 3).unwrap());
    }
    for (media_type, blob) in [
        (media::OCI_LAYER_TAR, &tar),
        (media::OCI_LAYER_GZIP, &gz),
        (media::DOCKER_LAYER_GZIP, &gz),
        (media::OCI_LAYER_ZSTD, &zs),
    ] {
        let packing = Packing::of_media_type(media_type).unwrap();
        let mut out = Vec::new();
        packing
            .decode(blob.as_slice())
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert!(out == tar, "{media_type}: {} bytes", out.len());
    }
    assert_eq!(Packing::of_media_type(media::OCI_CONFIG), None);
    assert_eq!(
        Packing::of_media_type("application/vnd.oci.image.layer.v1.tar+bzip2"),
        None
    );
    assert_eq!(Packing::from(true), Packing::Gzip);
    assert_eq!(Packing::from(false), Packing::Tar);
}
