#!/usr/bin/env bash
# Where a full direct build's time goes, on the Phoenix-shaped corpus from a
# fresh tarball (base cached, its preflight index warm; layout and the
# release's memo cold, as in scripts/bench-corpus.sh):
#   - CPU: `perf record -e cpu-clock` samples (a software clock: this VM has
#     no hardware counters, `perf stat -e instructions` says "not
#     supported"), all threads, grouped by what the symbol does;
#   - waiting: fsync/fdatasync wall time from strace (blocked time is not CPU);
#   - the tarball's cost: median wall time of the build from the tarball vs
#     from the release directory (hyperfine): inflating it into the spool.
# valgrind's callgrind counts instructions but cannot run SHA-NI (the sha2
# crate falls back to its software rounds under it, 20x the work), so its
# counts misstate hashing; perf samples the real binary.
# Usage: scripts/profile-build.sh [RUNS]
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
runs="${1:-7}"
scripts/install-deps.sh
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked --quiet --bin guildhall-image
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/guildhall-image"
base="$(fixtures/make-base-layout.sh)"
corpus="$(scripts/make-phoenix-corpus.sh)"
w="$(mktemp -d)"; trap 'rm -rf "$w"' EXIT
export GUILDHALL_IMAGE_CACHE="$w/cache"
build() { "$bin" -q build --base "oci:$base:runner" --tag t --layout "$w/l" --release "$@" >/dev/null; }
cold() { rm -rf "$w/l" "$w/cache/memo/diffid" "$w/cache/memo/preflight"; cp "$corpus/a/guildhall-0.1.0.tar.gz" "$w/fresh.tar.gz"; }

cold; build "$w/fresh.tar.gz"     # warm: the base's preflight index
rm -rf "$w/dir"; mkdir -p "$w/dir"; tar -C "$w/dir" -xzf "$corpus/a/guildhall-0.1.0.tar.gz"
for input in tarball directory; do
  cold
  release="$w/fresh.tar.gz"; [ "$input" = directory ] && release="$w/dir"
  perf record -q -e cpu-clock -F 4000 -o "$w/perf.data" -- "$bin" -q build --base "oci:$base:runner" --tag t \
    --layout "$w/l" --release "$release" >/dev/null 2>"$w/perf.log"
  perf report -i "$w/perf.data" --stdio --sort dso,symbol 2>/dev/null | grep -v '^#' | grep . > "$w/report-$input.txt"
  perf report -i "$w/perf.data" --stdio --sort dso 2>/dev/null | grep -v '^#' | grep . > "$w/dso-$input.txt"
done

cold
strace -f -qq -T -e trace=fsync,fdatasync -o "$w/strace.txt" "$bin" -q build --base "oci:$base:runner" --tag t \
  --layout "$w/l" --release "$w/fresh.tar.gz" >/dev/null

hyperfine --runs "$runs" --warmup 1 --export-json "$w/detour.json" \
  --prepare "rm -rf $w/l $w/cache/memo/diffid $w/cache/memo/preflight; cp $corpus/a/guildhall-0.1.0.tar.gz $w/fresh.tar.gz" \
  -n tarball "$bin -q build --base oci:$base:runner --tag t --layout $w/l --release $w/fresh.tar.gz" \
  -n directory "$bin -q build --base oci:$base:runner --tag t --layout $w/l --release $w/dir" >&2

python3 - "$w" <<'PY'
import json, re, sys, os
w = sys.argv[1]
groups = [
    ("sha256 (diff IDs, blob digests, base blob verification)", r"sha2::|sha256"),
    ("deflate (zlib-rs compress)", r"zlib_rs::deflate|deflate_medium|deflate_quick|deflate_fast|deflate_slow|longest_match|compress_block|zlib_rs::.*(insert_string|fill_window|hash_calc|compare256)|zng_tr|trees|bi_"),
    ("inflate (the release tarball; preflight's base reads)", r"zlib_rs::inflate|inflate_fast"),
    ("crc32 / adler32", r"crc32|adler32|Crc"),
    ("incompressible test (byte histogram)", r"looks_incompressible"),
    ("libdeflate / zstd", r"libdeflate|ZSTD|zstd"),
    ("tar (reading the tarball, writing layer tars)", r"tar::|write_tar|write_header|copy_exact"),
    ("memcpy / memmove / memset", r"memcpy|memmove|memset"),
    ("kernel: file writes, reads, page cache, fs", r"\[kernel"),
]
def shares(path):
    totals = {g: 0.0 for g, _ in groups}
    totals["everything else"] = 0.0
    others = []
    samples = 0
    for line in open(path):
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
        if not m:
            continue
        pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
        key = f"[kernel] {sym}" if kind == "k" else f"{dso} {sym}"
        for g, rx in groups:
            if re.search(rx, key):
                totals[g] += pct
                break
        else:
            totals["everything else"] += pct
            others.append((pct, key))
    return totals, others
tar_t, tar_o = shares(os.path.join(w, "report-tarball.txt"))
dir_t, dir_o = shares(os.path.join(w, "report-directory.txt"))
print("| where (CPU samples, all threads) | build from the tarball | from the directory |")
print("|---|---|---|")
for g in tar_t:
    print(f"| {g} | {tar_t[g]:.1f}% | {dir_t[g]:.1f}% |")
print("\ntop of everything else (tarball):", "; ".join(f"{k[:60].strip()} {p:.1f}%" for p, k in sorted(tar_o, reverse=True)[:6]))
kernel = [l for l in open(os.path.join(w, "report-tarball.txt")) if "[k]" in l][:5]
print("top kernel symbols (tarball):", "; ".join(" ".join(l.split()[i] for i in (0, 3)) for l in kernel))
fs = [float(x) for x in re.findall(r"<([\d.]+)>", open(os.path.join(w, "strace.txt")).read())]
print(f"\nfsync/fdatasync: {len(fs)} calls, {sum(fs):.3f} s of wall time in them")
r = {x["command"]: x for x in json.load(open(os.path.join(w, "detour.json")))["results"]}
t, d = r["tarball"]["median"], r["directory"]["median"]
print(f"tarball input: from the tarball {t:.3f} s, from the directory {d:.3f} s (median of {len(r['tarball']['times'])}): "
      f"inflating and spooling it costs {t - d:.3f} s = {(t - d) / t:.0%} of the build from the tarball")
PY
