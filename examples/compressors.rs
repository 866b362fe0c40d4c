//! The compressor study: every codec and level of `guildhall_image::compress`
//! on real layer tar streams, side by side, as a markdown table.
//!
//! ```sh
//! scripts/bench-compressors.sh            # makes the tar streams, runs this, adds umoci
//! cargo run --release --example compressors -- --row phoenix A.tar B.tar … [--row big C.tar …]
//!     [--runs 3] [--threads 2] [--quick] [--umoci ROW=BYTES:SECONDS …]
//! ```
//!
//! Each row is a set of tar streams (one per layer of a release), compressed
//! one after the other in memory with `compress_in_memory` on `--threads`
//! threads, the way the layer writer cuts them (1 MiB blocks unless the
//! table says otherwise). Wall time is the median of `--runs`; CPU time
//! (user and system, all threads) is given too, since this machine is shared
//! and wall clock is noisy.

use std::io::Write as _;
use std::time::Instant;

use guildhall_image::compress::{Codec, compress_in_memory, zstd_mt_encoder};

/// A line (or part of one) on stdout; a closed stdout ends the study
/// quietly (the crate's lint bans println!, which panics then).
macro_rules! say {
    ($($a:tt)*) => {{
        if writeln!(std::io::stdout(), $($a)*).is_err() {
            std::process::exit(0)
        }
    }};
}
macro_rules! say_part {
    ($($a:tt)*) => {{
        if write!(std::io::stdout(), $($a)*).is_err() {
            std::process::exit(0)
        }
    }};
}

struct Row {
    name: String,
    streams: Vec<Vec<u8>>,
}

#[derive(Clone, Copy)]
enum Mode {
    Blocks(Codec, usize),
    ZstdMt(i32),
}

impl Mode {
    fn label(&self) -> (String, String, String) {
        match *self {
            Mode::Blocks(c, b) => {
                let (name, level) = match c {
                    Codec::Zlib(l) => ("zlib-rs, one member, 32 KiB dictionary", l as i32),
                    Codec::Libdeflate(l) => ("libdeflate, member per block", l as i32),
                    Codec::Zstd(l) => ("zstd, frame per block", l),
                };
                (name.into(), level.to_string(), format!("{} KiB", b / 1024))
            }
            Mode::ZstdMt(l) => (
                "zstd MT, one frame".into(),
                l.to_string(),
                "jobs (4 × window)".into(),
            ),
        }
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn run(mode: Mode, row: &Row, threads: usize) -> (u64, f64, f64) {
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut size = 0u64;
    for s in &row.streams {
        let out = match mode {
            Mode::Blocks(codec, block) => compress_in_memory(codec, s, block, threads).unwrap(),
            Mode::ZstdMt(level) => {
                use std::io::Write;
                let mut e = zstd_mt_encoder(Vec::new(), level, threads as u32).unwrap();
                for chunk in s.chunks(1 << 20) {
                    e.write_all(chunk).unwrap();
                }
                e.finish().unwrap()
            }
        };
        size += out.len() as u64;
    }
    (size, t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `--rss-probe LEVEL WORKERS FILE`: stream FILE through zstd's MT encoder
/// into nothing and print the peak RSS (KiB), for the memory bound.
fn rss_probe(level: i32, workers: u32, file: &str) {
    use std::io::{Read, Write};
    let mut f = std::fs::File::open(file).unwrap();
    let mut e = zstd_mt_encoder(std::io::sink(), level, workers).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        e.write_all(&buf[..n]).unwrap();
    }
    e.finish().unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .to_owned();
    say!("zstd MT level {level}, {workers} workers: peak RSS {hwm}");
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--rss-probe") {
        rss_probe(argv[2].parse().unwrap(), argv[3].parse().unwrap(), &argv[4]);
        return;
    }
    let mut args = std::env::args().skip(1);
    let mut rows: Vec<Row> = Vec::new();
    let mut runs = 3;
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut quick = false;
    let mut umoci: Vec<(String, u64, f64, f64)> = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--row" => rows.push(Row {
                name: args.next().expect("--row NAME"),
                streams: Vec::new(),
            }),
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--threads N")
            }
            "--quick" => quick = true,
            "--umoci" => {
                let v = args.next().expect("--umoci ROW=BYTES:SECONDS:CPU");
                let (row, rest) = v.split_once('=').expect("ROW=BYTES:SECONDS:CPU");
                let f: Vec<&str> = rest.split(':').collect();
                umoci.push((
                    row.into(),
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                ));
            }
            file => rows
                .last_mut()
                .expect("--row NAME before the tar files")
                .streams
                .push(std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"))),
        }
    }
    assert!(!rows.is_empty(), "no --row given");

    const MIB: usize = 1 << 20;
    let mut modes = Vec::new();
    let (zl, ld, zs): (Vec<u32>, Vec<u32>, Vec<i32>) = if quick {
        (vec![1, 6], vec![1, 6], vec![1, 3])
    } else {
        ((1..=9).collect(), (1..=12).collect(), (1..=19).collect())
    };
    modes.extend(zl.iter().map(|&l| Mode::Blocks(Codec::Zlib(l), MIB)));
    modes.extend(ld.iter().map(|&l| Mode::Blocks(Codec::Libdeflate(l), MIB)));
    for block in [256 * 1024, 4 * MIB] {
        modes.extend(
            [1u32, 4, 6, 9]
                .iter()
                .map(|&l| Mode::Blocks(Codec::Libdeflate(l), block)),
        );
    }
    let zs_blocks: Vec<i32> = if quick {
        zs.clone()
    } else {
        vec![1, 3, 6, 9, 12, 15, 19]
    };
    modes.extend(zs_blocks.iter().map(|&l| Mode::Blocks(Codec::Zstd(l), MIB)));
    for block in [4 * MIB, 16 * MIB] {
        modes.extend(
            [1, 3, 9]
                .iter()
                .map(|&l| Mode::Blocks(Codec::Zstd(l), block)),
        );
    }
    modes.extend(zs.iter().map(|&l| Mode::ZstdMt(l)));

    for row in &rows {
        let input: u64 = row.streams.iter().map(|s| s.len() as u64).sum();
        say!(
            "\n### {}: {} layer tar streams, {:.1} MB uncompressed, {threads} threads, median of {runs}\n",
            row.name,
            row.streams.len(),
            input as f64 / 1e6
        );
        let peer = umoci.iter().find(|(r, _, _, _)| *r == row.name);
        say!(
            "| compressor | level | block | MB/s (wall) | CPU s | compressed MB | ratio |{}",
            if peer.is_some() {
                " vs umoci size |"
            } else {
                ""
            }
        );
        say!(
            "|---|---|---|---|---|---|---|{}",
            if peer.is_some() { "---|" } else { "" }
        );
        if let Some((_, bytes, secs, cpu)) = peer {
            say!(
                "| umoci insert (pgzip, default level; the whole insert: walk, compress, hash, write) | — | 256 KiB | {:.0} | {cpu:.2} | {:.2} | {:.3} | 1.000 |",
                input as f64 / 1e6 / secs,
                *bytes as f64 / 1e6,
                *bytes as f64 / input as f64
            );
        }
        for &mode in &modes {
            let mut walls = Vec::new();
            let mut cpus = Vec::new();
            let mut size = 0;
            for _ in 0..runs {
                let (s, w, c) = run(mode, row, threads);
                size = s;
                walls.push(w);
                cpus.push(c);
                if w > 5.0 {
                    break; // slow levels: one run says enough
                }
            }
            let (name, level, block) = mode.label();
            let wall = median(walls);
            say_part!(
                "| {name} | {level} | {block} | {:.0} | {:.2} | {:.2} | {:.3} |",
                input as f64 / 1e6 / wall,
                median(cpus),
                size as f64 / 1e6,
                size as f64 / input as f64
            );
            if let Some((_, bytes, _, _)) = peer {
                say_part!(" {:.3} |", size as f64 / *bytes as f64);
            }
            say!();
        }
    }
}
