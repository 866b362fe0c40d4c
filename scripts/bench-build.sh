#!/usr/bin/env bash
# Benchmark of the direct build (issue 2 targets), side by side with umoci in
# one run, medians from hyperfine:
#   1. full build, base cached: guildhall-image build  vs  umoci insert of the
#      same unpacked release onto the same base layout (+ umoci config);
#   2. rebuild after a one-module change, as a fraction of the full build;
#   3. peak RSS of a full build for a 64 MB and a ~260 MB release (flat?),
#      from the release directory and from its tarball.
# Usage: scripts/bench-build.sh [RUNS]   (needs root for umoci's chown'd copy)
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
runs="${1:-5}"
scripts/install-deps.sh
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/guildhall-image"

base="$(fixtures/make-base-layout.sh)"
rel_a="$(fixtures/build-release.sh --big-mb 50)/_build/prod/rel/guildhall"
rel_b="$(fixtures/build-release.sh --big-mb 50 --greeting 'Hello, bench')/_build/prod/rel/guildhall"
rel_xl="$(fixtures/build-release.sh --big-mb 250)/_build/prod/rel/guildhall"
w="$(mktemp -d)"; trap 'rm -rf "$w"' EXIT
echo "release: $(du -sh --apparent-size "$rel_a" | cut -f1) uncompressed; cores: $(nproc)" >&2

# umoci insert takes the tree as it is: give it the same ownership the tool sets.
cp -a "$rel_a" "$w/tree"; chown -R 65534:0 "$w/tree"

# Every full build is cold for the release: a fresh layout, no remembered
# diff IDs, no remembered preflight pass. The base is cached, with the index
# of its files that preflight reads (made by the warmup run).
export GUILDHALL_IMAGE_CACHE="$w/cache"
hyperfine --runs "$runs" --warmup 1 --export-json "$w/full.json" \
  --prepare "rm -rf $w/g $w/u $w/cache/memo/diffid $w/cache/memo/preflight; cp -a $base $w/u" \
  -n guildhall-image "$bin -q build --release $rel_a --base oci:$base:runner --layout $w/g --tag t --skip-preflight" \
  -n guildhall-image+preflight "$bin -q build --release $rel_a --base oci:$base:runner --layout $w/g --tag t" \
  -n umoci-insert "umoci insert --image $w/u:runner --tag t $w/tree /app && umoci config --image $w/u:t --config.cmd /app/bin/server --config.user nobody --config.workingdir /app"

# Rebuild: the layout already holds the build of release A, made on this
# machine (so the cache remembers its diff IDs and preflight).
"$bin" -q build --release "$rel_a" --base "oci:$base:runner" --layout "$w/snap" --tag a >/dev/null
hyperfine --runs "$runs" --warmup 1 --export-json "$w/rebuild.json" \
  --prepare "rm -rf $w/r; cp -a $w/snap $w/r" \
  -n rebuild-one-module "$bin -q build --release $rel_b --base oci:$base:runner --layout $w/r --tag b"

rss() { rm -rf "$w/m"; /usr/bin/time -f '%M' "$bin" -q build --release "$1" --base "oci:$base:runner" --layout "$w/m" --tag t 2>&1 >/dev/null | tail -1; }
rss_a=$(rss "$rel_a"); rss_xl=$(rss "$rel_xl")
rss_a_tar=$(rss "$rel_a/../../guildhall-0.1.0.tar.gz"); rss_xl_tar=$(rss "$rel_xl/../../guildhall-0.1.0.tar.gz")

python3 - "$w/full.json" "$w/rebuild.json" "$rss_a" "$rss_xl" "$(du -sm --apparent-size "$rel_a" | cut -f1)" "$(du -sm --apparent-size "$rel_xl" | cut -f1)" "$rss_a_tar" "$rss_xl_tar" <<'PY'
import json, sys
full = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
reb = json.load(open(sys.argv[2]))["results"][0]
g, gp, u = full["guildhall-image"]["median"], full["guildhall-image+preflight"]["median"], full["umoci-insert"]["median"]
print(f"full build (median of {len(full['umoci-insert']['times'])}): guildhall-image {g:.2f}s, with preflight {gp:.2f}s, umoci insert {u:.2f}s")
print(f"  ratio guildhall-image / umoci: {g/u:.2f} (with preflight {gp/u:.2f}); target <= 1.0")
print(f"rebuild after a one-module change: {reb['median']:.2f}s = {reb['median']/gp:.0%} of a full build; target <= 20%")
print(f"peak RSS: {int(sys.argv[3])/1024:.0f} MB for a {sys.argv[5]} MB release, {int(sys.argv[4])/1024:.0f} MB for {sys.argv[6]} MB; target <= 100 MB, flat")
print(f"peak RSS from the tarballs: {int(sys.argv[7])/1024:.0f} MB for {sys.argv[5]} MB, {int(sys.argv[8])/1024:.0f} MB for {sys.argv[6]} MB")
PY
