#!/usr/bin/env bash
# Downloads and caches, by sha256, what the Debian-archive tests use, with
# apt's own tools as the judge: each pocket's InRelease checked by gpgv
# against /usr/share/keyrings/debian-archive-keyring.gpg, its Packages.gz
# and Contents-ARCH.gz checked by sha256sum against the signed SHA256 list,
# and each named package's .deb (highest version across the pockets, by
# `dpkg --compare-versions`) checked against Packages. Files land where
# guildhall-image's Debian cache keeps them ($CACHE/debian/sha256/AB/ABCD…),
# so the tests and CI runs share them.
#
# Usage: debian-archive.sh [--suite S]... [--package NAME]... [--arch A]
#   (default suites: bookworm trixie; arch: amd64)
# Prints CACHE=DIR, then for each suite and package
#   PACKAGE_<suite>_<name>=VERSION SHA256 POCKET
# (what apt would pick, for the tests to compare with; empty when the suite
# has no such package).
# Idempotent and flock-protected. Mirrors: DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR.
set -euo pipefail

root="${GUILDHALL_IMAGE_TEST_CACHE:-$HOME/.cache/guildhall-image-tests}/debian"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
suites=()
packages=()
arch=amd64
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) suites+=("$2"); shift 2 ;;
    --package) packages+=("$2"); shift 2 ;;
    --arch) arch="$2"; shift 2 ;;
    *) echo "debian-archive.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#suites[@]} -gt 0 ] || suites=(bookworm trixie)

mkdir -p "$root/sha256" "$root/tmp"
[ -f "$root/CACHEDIR.TAG" ] || printf 'Signature: 8a477f597d28d172789f06886806bc55\n' > "$root/CACHEDIR.TAG"
exec 9>"$root/.warm.lock"
flock -w 900 9 || { echo "debian-archive.sh: timed out waiting for the lock" >&2; exit 1; }
work="$(mktemp -d "$root/tmp/warm.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# put SHA256 URL [FALLBACK_URL] → prints the cache path (downloads unless
# cached and intact; a mirror's by-hash copy may be missing: then the fallback)
put() {
  local sha="$1" dest="$root/sha256/${1:0:2}/$1" url
  shift
  if [ -f "$dest" ] && [ "$(sha256sum < "$dest" | cut -d' ' -f1)" = "$sha" ]; then
    echo "$dest"; return
  fi
  mkdir -p "$(dirname "$dest")"
  local tmp="$work/download"
  for url in "$@"; do
    if curl -fsS --retry 3 --connect-timeout 20 -o "$tmp" "$url" 2>"$work/curl.log"; then
      if [ "$(sha256sum < "$tmp" | cut -d' ' -f1)" != "$sha" ]; then
        echo "debian-archive.sh: $url does not have sha256 $sha" >&2; exit 1
      fi
      mv "$tmp" "$dest"
      echo "$dest"
      return
    fi
  done
  cat "$work/curl.log" >&2
  echo "debian-archive.sh: cannot download $*" >&2
  exit 1
}

# signed_sha RELEASE_FILE PATH → the sha256 the signed text lists for PATH
signed_sha() {
  awk -v p="$2" '/^SHA256:/{s=1; next} /^[^ ]/{s=0} s && $3==p {print $1; exit}' "$1"
}

echo "CACHE=$root"
for suite in "${suites[@]}"; do
  lists=()
  for pocket in "$suite" "$suite-updates" "$suite-security"; do
    base="$mirror"; [ "$pocket" = "$suite-security" ] && base="$security"
    rel="$work/$pocket.InRelease"
    curl -fsS --retry 3 --connect-timeout 20 -o "$rel" "$base/dists/$pocket/InRelease"
    gpgv --keyring "$keyring" --output "$work/$pocket.Release" "$rel" 2>"$work/gpgv.log" \
      || { cat "$work/gpgv.log" >&2; echo "debian-archive.sh: $pocket InRelease does not verify" >&2; exit 1; }
    # gzip where the pocket has it (fastest to read), else xz.
    ext=""
    for e in gz xz; do
      sha="$(signed_sha "$work/$pocket.Release" "main/binary-$arch/Packages.$e")"
      [ -z "$sha" ] || { ext="$e"; break; }
    done
    [ -n "$ext" ] || { echo "debian-archive.sh: $pocket lists no main/binary-$arch/Packages.{gz,xz}" >&2; exit 1; }
    f="$(put "$sha" "$base/dists/$pocket/main/binary-$arch/by-hash/SHA256/$sha" "$base/dists/$pocket/main/binary-$arch/Packages.$ext")"
    lists+=("$pocket=$ext=$f")
    if [ "$pocket" = "$suite" ]; then
      csha="$(signed_sha "$work/$pocket.Release" "main/Contents-$arch.gz")"
      # A mirror mid-sync may serve a Contents that is not the signed one:
      # then the tests see the tool refuse it; warming goes on.
      [ -z "$csha" ] || (put "$csha" "$base/dists/$pocket/main/by-hash/SHA256/$csha" "$base/dists/$pocket/main/Contents-$arch.gz" >/dev/null) \
        || echo "debian-archive.sh: warning: $pocket's Contents-$arch.gz is not the signed one; not cached" >&2
    fi
  done
  for name in "${packages[@]}"; do
    best_v=""; best=""
    for entry in "${lists[@]}"; do
      pocket="${entry%%=*}"; rest="${entry#*=}"; ext="${rest%%=*}"; f="${rest#*=}"
      if [ "$ext" = gz ]; then cat=zcat; else cat=xzcat; fi
      line="$($cat "$f" | awk -v n="$name" '
        /^Package: /{p=$2; v=""; fn=""; sh=""}
        p==n && /^Version: /{v=$2}
        p==n && /^Filename: /{fn=$2}
        p==n && /^SHA256: /{sh=$2}
        /^$/ && p==n && v!="" {print v, fn, sh; p=""}
        END{if (p==n && v!="") print v, fn, sh}' | head -1)"
      [ -n "$line" ] || continue
      read -r v fn sh <<<"$line"
      if [ -z "$best_v" ] || dpkg --compare-versions "$v" gt "$best_v"; then
        best_v="$v"; best="$fn $sh $pocket"
      fi
    done
    if [ -z "$best" ]; then echo "PACKAGE_${suite}_${name}="; continue; fi
    read -r fn sh pocket <<<"$best"
    base="$mirror"; [ "$pocket" = "$suite-security" ] && base="$security"
    put "$sh" "$base/$fn" >/dev/null
    echo "PACKAGE_${suite}_${name}=$best_v $sh $pocket"
  done
done
