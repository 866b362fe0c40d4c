//! Benchmarks, ignored by default (run with `--ignored --nocapture`):
//!
//! - `push_throughput_against_skopeo`: first push of a layout with a
//!   `GUILDHALL_BENCH_MB` (default 60) MiB layer to a loopback registry, by
//!   this client and by `skopeo copy`, alternating, 3 runs each, each to a new
//!   empty registry (so every blob is uploaded); prints the medians and the
//!   ratio. `cargo test --release --test registry -- --ignored --nocapture push_throughput`
//! - `pushing_a_large_layer_keeps_memory_flat`: pushes one
//!   `GUILDHALL_BENCH_MB` (default 500) MiB layer; run it under
//!   `/usr/bin/time -v` to read the peak RSS.

use std::time::{Duration, Instant};

use guildhall_image::image::RegistryRef;

use guildhall_image::registry::{ClientOptions, PushOptions};

use crate::support::*;

fn bench_mb(default: u64) -> u64 {
    std::env::var("GUILDHALL_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn push_throughput_against_skopeo() {
    let mb = bench_mb(60);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("l");
    let (layout, img) = make_image(&dir, "v1", &[mb * MIB, 200_000], 7);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..3 {
        // A new, empty registry for every run: skopeo's blob-info cache would
        // otherwise mount blobs it saw in an earlier run instead of uploading.
        let reg = Registry::start(Mode::Anonymous);
        let c = client(anonymous(), ClientOptions::default());
        let target = RegistryRef::parse_repository(&format!("{}/bench/ours", reg.host)).unwrap();
        let t = Instant::now();
        let report = push_v1(&c, &layout, &img, &target, &PushOptions::default())
            .await
            .unwrap();
        ours.push(t.elapsed());
        assert_eq!(report.uploaded(), 3);
        drop(reg);

        let reg = Registry::start(Mode::Anonymous);
        let t = Instant::now();
        skopeo(&[
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", dir.display()),
            &format!("docker://{}/bench/skopeo:v1", reg.host),
        ]);
        theirs.push(t.elapsed());
    }
    let (o, s) = (median(ours.clone()), median(theirs.clone()));
    println!(
        "push of a {mb} MiB layer: guildhall-image median {:.3}s {ours:?}; skopeo copy median {:.3}s {theirs:?}; ratio {:.2}; {:.0} MiB/s",
        o.as_secs_f64(),
        s.as_secs_f64(),
        o.as_secs_f64() / s.as_secs_f64(),
        mb as f64 / o.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn pushing_a_large_layer_keeps_memory_flat() {
    let mb = bench_mb(500);
    let reg = Registry::start(Mode::Anonymous);
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[mb * MIB], 8);
    let c = client(anonymous(), ClientOptions::default());
    let target = RegistryRef::parse_repository(&format!("{}/bench/big", reg.host)).unwrap();
    let t = Instant::now();
    let report = push_v1(&c, &layout, &img, &target, &PushOptions::default())
        .await
        .unwrap();
    println!(
        "pushed {mb} MiB in {:.2}s ({} blobs uploaded)",
        t.elapsed().as_secs_f64(),
        report.uploaded()
    );
}

/// `chunked_push_through_a_capped_proxy`: the same layer pushed straight to
/// the registry (one PUT) and through nginx with an 8 MiB body cap in
/// `GUILDHALL_BENCH_CHUNK_MIB` (default 4) MiB chunks, 3 runs each to empty
/// registries; prints medians and throughputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn chunked_push_through_a_capped_proxy() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mb = bench_mb(60);
    let chunk_mib: u64 = std::env::var("GUILDHALL_BENCH_CHUNK_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[mb * MIB], 9);
    let mut direct = Vec::new();
    let mut proxied = Vec::new();
    for _ in 0..3 {
        let reg = Registry::start(Mode::Anonymous);
        let c = client(anonymous(), ClientOptions::default());
        let target = RegistryRef::parse_repository(&format!("{}/bench/direct", reg.host)).unwrap();
        let t = Instant::now();
        push_v1(&c, &layout, &img, &target, &PushOptions::default())
            .await
            .unwrap();
        direct.push(t.elapsed());
        drop(reg);

        let reg = Registry::start(Mode::Anonymous);
        let proxy = Proxy::start(&reg.port, "8m");
        // GUILDHALL_BENCH_NO_PROXY=1: the same chunks straight to the
        // registry, to tell the proxy's cost from the chunking's.
        let host = if std::env::var_os("GUILDHALL_BENCH_NO_PROXY").is_some() {
            reg.host.clone()
        } else {
            proxy.host.clone()
        };
        let c = client(
            anonymous(),
            ClientOptions {
                chunk_size: chunk_mib * MIB,
                monolithic_max: chunk_mib * MIB,
                ..ClientOptions::default()
            },
        );
        let target = RegistryRef::parse_repository(&format!("{host}/bench/proxied")).unwrap();
        let t = Instant::now();
        push_v1(&c, &layout, &img, &target, &PushOptions::default())
            .await
            .unwrap();
        proxied.push(t.elapsed());
    }
    let (d, p) = (median(direct.clone()), median(proxied.clone()));
    println!(
        "push of a {mb} MiB layer: direct median {:.3}s ({:.0} MiB/s) {direct:?}; through the 8m proxy in {chunk_mib} MiB chunks median {:.3}s ({:.0} MiB/s) {proxied:?}; proxied/direct throughput {:.2}",
        d.as_secs_f64(),
        mb as f64 / d.as_secs_f64(),
        p.as_secs_f64(),
        mb as f64 / p.as_secs_f64(),
        d.as_secs_f64() / p.as_secs_f64()
    );
}
