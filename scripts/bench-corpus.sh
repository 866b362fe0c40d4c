#!/usr/bin/env bash
# Benchmark of the direct build on releases as CI gets them (issue 11
# targets), side by side with umoci in one run, in interleaved rounds
# (scripts/rounds.py: each round runs every command once; ratios are taken
# within a round, then medianed, so the machine's drift stays out of them), for
# two corpora:
#   phoenix — the Phoenix-shaped release of scripts/make-phoenix-corpus.sh
#             (~57 MB: ERTS/OTP, 25 dependency apps, priv/static with
#             phx.digest's copies, images);
#   big     — the fixture with 50 MiB of incompressible assets (--big-mb 50).
# Each row:
#   1. full build, base cached, from a FRESH copy of the release tarball
#      (new inodes and mtimes every run, as every CI job has) and from the
#      release directory, vs `umoci insert` of the same tree onto the same
#      base layout + `umoci config` (umoci is given the extracted tree);
#   2. rebuild after a one-module change from a new tarball (the layout
#      holds the previous build, made from the previous tarball), as a
#      fraction of the full build from a tarball;
#   3. total compressed size of the release layers vs umoci's layer;
#   4. with a binary that has `--compression`, the same full build with zstd.
# Usage: scripts/bench-corpus.sh [RUNS]   (needs root for umoci's chown'd copy)
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
runs="${1:-5}"
scripts/install-deps.sh
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked --quiet --bin guildhall-image
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/guildhall-image"

base="$(fixtures/make-base-layout.sh)"
corpus="$(scripts/make-phoenix-corpus.sh)"
fixture_a="$(fixtures/build-release.sh --big-mb 50)/_build/prod"
fixture_b="$(fixtures/build-release.sh --big-mb 50 --greeting 'Hello, bench')/_build/prod"
w="$(mktemp -d)"; trap 'rm -rf "$w"' EXIT
export GUILDHALL_IMAGE_CACHE="$w/cache"
zstd=""
"$bin" build --help | grep -q -- '--compression' && zstd=1
echo "cores: $(nproc); zstd: ${zstd:-not in this binary}" >&2

base_layers="$(jq '.layers | length' "$base/blobs/sha256/$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "runner") | .digest' "$base/index.json" | cut -d: -f2)")"
release_bytes() { # LAYOUT TAG: compressed bytes of the layers above the base
  local m
  m="$(jq -r --arg t "$2" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$1/index.json")"
  jq "[.layers[$3:][].size] | add" "$1/blobs/sha256/${m#sha256:}"
}

for row in phoenix big; do
  if [ "$row" = phoenix ]; then
    tar_a="$corpus/a/guildhall-0.1.0.tar.gz"; tar_b="$corpus/b/guildhall-0.1.0.tar.gz"; dir_a="$corpus/a/guildhall"
  else
    tar_a="$fixture_a/guildhall-0.1.0.tar.gz"; tar_b="$fixture_b/guildhall-0.1.0.tar.gz"; dir_a="$fixture_a/rel/guildhall"
  fi
  r="$w/$row"; mkdir -p "$r"
  rm -rf "$w/tree"; cp -a "$dir_a" "$w/tree"; chown -R 65534:0 "$w/tree"
  build="$bin -q build --base oci:$base:runner --tag t --skip-preflight"
  # Cold for the release every run: a fresh layout, no remembered diff IDs
  # or preflight, a fresh copy of the tarball. The base stays cached, with
  # what the cache remembers about it (its blobs verified, its file index).
  cold="rm -rf $r/g $r/u $w/cache/memo/diffid $w/cache/memo/preflight; cp $tar_a $r/fresh.tar.gz; cp -a $base $r/u"
  zstd_cmd=()
  [ -n "$zstd" ] && zstd_cmd=(-n "$row: guildhall-image, tarball, zstd" "$build --compression zstd --release $r/fresh.tar.gz --layout $r/g")
  umoci_cmd="umoci insert --image $r/u:runner --tag t $w/tree /app && umoci config --image $r/u:t --config.cmd /app/bin/server --config.user 65534:65534 --config.workingdir /app"
  # Rebuild: the layout holds the build of tarball A (made on this machine,
  # so the cache remembers what it may: its memo is kept and put back before
  # every rebuild); B is a new tarball, freshly copied.
  rm -rf "$r/snap" "$w/cache/memo"
  cp "$tar_a" "$r/a.tar.gz"
  $build --release "$r/a.tar.gz" --layout "$r/snap" >/dev/null
  rm -rf "$r/memo"; cp -a "$w/cache/memo" "$r/memo"
  rebuild_prep="rm -rf $r/rb $w/cache/memo; cp -a $r/snap $r/rb; cp -a $r/memo $w/cache/memo; cp $tar_b $r/fresh-b.tar.gz"
  # Every round runs each command once, after its own prepare step
  # (scripts/rounds.py): ratios are taken within a round, then medianed.
  {
    jq -n --arg p "$cold" --arg c "$build --release $r/fresh.tar.gz --layout $r/g" '{name: "tarball", prepare: $p, command: $c}'
    jq -n --arg p "$cold" --arg c "$build --release $dir_a --layout $r/g" '{name: "directory", prepare: $p, command: $c}'
    jq -n --arg p "$cold" --arg c "$umoci_cmd" '{name: "umoci", prepare: $p, command: $c}'
    [ -n "$zstd" ] && jq -n --arg p "$cold" --arg c "$build --compression zstd --release $r/fresh.tar.gz --layout $r/g" '{name: "zstd", prepare: $p, command: $c}'
    jq -n --arg p "$rebuild_prep" --arg c "$build --release $r/fresh-b.tar.gz --layout $r/rb --tag b" '{name: "rebuild", prepare: $p, command: $c}'
  } | jq -s . | python3 scripts/rounds.py "$runs" 1 "$r/rounds.json"

  # Sizes, from one more build of each.
  eval "$cold"
  $build --release "$r/fresh.tar.gz" --layout "$r/g" >/dev/null
  ours="$(release_bytes "$r/g" t "$base_layers")"
  umoci insert --image "$r/u:runner" --tag t "$w/tree" /app
  theirs="$(release_bytes "$r/u" t "$base_layers")"
  # Peak RSS of one full build from the tarball (gzip, then zstd).
  eval "$cold"
  rss="$( { /usr/bin/time -f '%M' $build --release "$r/fresh.tar.gz" --layout "$r/g" >/dev/null; } 2>&1 | tail -1)"
  zrss=0
  zbytes=0
  if [ -n "$zstd" ]; then
    eval "$cold"
    zrss="$( { /usr/bin/time -f '%M' $build --compression zstd --release "$r/fresh.tar.gz" --layout "$r/g" >/dev/null; } 2>&1 | tail -1)"
    rm -rf "$r/z"; $build --compression zstd --release "$r/fresh.tar.gz" --layout "$r/z" >/dev/null
    zbytes="$(release_bytes "$r/z" t "$base_layers")"
  fi

  printf '%s %s %s %s %s %s\n' "$row" "$ours" "$theirs" "$zbytes" "$rss" "$zrss" >> "$w/sizes"
done

python3 - "$w" <<'PY'
import json, sys, os, statistics
w = sys.argv[1]
sizes = {l.split()[0]: [int(x) for x in l.split()[1:]] for l in open(os.path.join(w, "sizes"))}
print("| corpus | full build from a tarball | from the directory | umoci insert | ratio tarball / umoci | ratio directory / umoci | rebuild, one module, new tarball | share of a full build | layers compressed: ours vs umoci | zstd build, size | peak RSS gzip / zstd |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
def ratio(a, b, pct=False):
    # medians of the per-round ratios, and their range
    rs = sorted(x / y for x, y in zip(a, b))
    f = (lambda x: f"{x:.0%}") if pct else (lambda x: f"{x:.2f}")
    return f"{f(statistics.median(rs))} ({f(rs[0])}–{f(rs[-1])})"
for row in ["phoenix", "big"]:
    res = {r["name"]: r for r in json.load(open(os.path.join(w, row, "rounds.json")))["results"]}
    T = {k: v["times"] for k, v in res.items()}
    M = {k: v["median"] for k, v in res.items()}
    ours, theirs, z, rss, zrss = sizes[row]
    zs = "—"
    if "zstd" in M:
        zs = f'{M["zstd"]:.2f} s, {z/1e6:.1f} MB'
    print(f"| {row} | {M['tarball']:.2f} s | {M['directory']:.2f} s | {M['umoci']:.2f} s | {ratio(T['tarball'], T['umoci'])} | {ratio(T['directory'], T['umoci'])} | {M['rebuild']:.2f} s | {ratio(T['rebuild'], T['tarball'], pct=True)} | {ours/1e6:.1f} MB vs {theirs/1e6:.1f} MB ({ours/theirs:.3f}) | {zs} | {rss/1024:.0f} / {zrss/1024:.0f} MB |")
n = json.load(open(os.path.join(w, "phoenix", "rounds.json")))["rounds"]
print(f"\n{n} interleaved rounds; times are medians, ratios the medians of each round's ratios (range); targets: full build <= 0.8x umoci and no larger; rebuild <= 15% of a full build")
PY
