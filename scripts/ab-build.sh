#!/usr/bin/env bash
# A/B of two guildhall-image binaries on the Phoenix corpus: a cold full
# build from a fresh copy of the tarball (base cached, its blobs remembered
# as verified; new layout, no remembered diff IDs), each binary once per
# round, in interleaved rounds (scripts/rounds.py). Prints each binary's
# median and the median (and quartiles) of the rounds' B/A ratios: what a
# change to the build is judged by, on a machine whose speed drifts.
# Usage: scripts/ab-build.sh BIN_A BIN_B [ROUNDS]   (e.g. the build before
# and after a change, from two CARGO_TARGET_DIRs)
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
if [ $# -lt 2 ]; then
  sed -n '2,9p' "$0" >&2
  exit 2
fi
a="$(realpath "$1")"; b="$(realpath "$2")"; rounds="${3:-15}"
base="$(fixtures/make-base-layout.sh)"
corpus="$(scripts/make-phoenix-corpus.sh)"
w="$(mktemp -d)"; trap 'rm -rf "$w"' EXIT
export GUILDHALL_IMAGE_CACHE="$w/cache"
build="build --base oci:$base:runner --tag t --skip-preflight --release $w/fresh.tar.gz --layout $w/l"
prep="rm -rf $w/l $w/cache/memo/diffid $w/cache/memo/preflight; cp $corpus/a/guildhall-0.1.0.tar.gz $w/fresh.tar.gz"
# Warm: the base's blobs verified and remembered.
eval "$prep"; "$a" -q $build >/dev/null
{
  jq -n --arg p "$prep" --arg c "$a -q $build" '{name: "A", prepare: $p, command: $c}'
  jq -n --arg p "$prep" --arg c "$b -q $build" '{name: "B", prepare: $p, command: $c}'
} | jq -s . | python3 scripts/rounds.py "$rounds" 1 "$w/rounds.json"
python3 - "$w/rounds.json" <<'PY'
import json, statistics, sys
r = {x["name"]: x["times"] for x in json.load(open(sys.argv[1]))["results"]}
q = sorted(b / a for a, b in zip(r["A"], r["B"]))
qs = statistics.quantiles(q, n=4) if len(q) > 1 else [q[0]] * 3
print(f"A {statistics.median(r['A']):.3f} s, B {statistics.median(r['B']):.3f} s; "
      f"B/A {statistics.median(q):.3f} (quartiles {qs[0]:.3f}-{qs[2]:.3f}) over {len(q)} rounds")
PY
