#!/usr/bin/env bash
# The logic of the guildhall-image action (action.yml at the repository root
# calls it; tests/workflow.rs runs it on its own too).
#
#   run.sh            install the binary, then build/push with it (the action)
#   run.sh install    only put the binary in the tool cache; print its path
#   run.sh tag        only print the image tag the ref gives
#
# Inputs come from the environment, never from arguments, so nothing the
# workflow passes is pasted into shell code or shows in a process list:
#   GUILDHALL_ACTION_VERSION   release to use: X.Y.Z or vX.Y.Z; empty = this
#                              action's own version (its Cargo.toml);
#                              `source` = build this action's source
#   GUILDHALL_ACTION_COMMAND   build (default) or push
#   GUILDHALL_ACTION_ARGS      more arguments, split at white space (no quoting)
#   GUILDHALL_ACTION_TAG       image tag(s), white-space separated; empty = the
#                              tag name of a tag push, else the short commit
#   GUILDHALL_ACTION_TO        push target (forgejo, ghcr, HOST[:PORT]/REPO);
#                              with `build`, empty = build only, no push
#   GUILDHALL_ACTION_RELEASES  base URL of the release downloads
#                              (…/OWNER/REPO/releases/download)
#   GUILDHALL_ACTION_SUMMARY   true (default): a table in the job summary
#   GUILDHALL_IMAGE_USERNAME / GUILDHALL_IMAGE_PASSWORD: the push target's
#                              credentials; the tool reads them from the
#                              environment and sends them to that host only
# and the runner's GITHUB_ACTION_PATH, RUNNER_TOOL_CACHE, RUNNER_TEMP,
# GITHUB_OUTPUT, GITHUB_PATH, GITHUB_STEP_SUMMARY, GITHUB_REF_TYPE,
# GITHUB_REF_NAME, GITHUB_SHA.
#
# Releases are laid out as Forgejo serves release attachments:
#   RELEASES/vX.Y.Z/guildhall-image-vX.Y.Z-<arch>-unknown-linux-musl
#   RELEASES/vX.Y.Z/SHA256SUMS            (sha256sum format)
# A missing SHA256SUMS (404: no such release, or no binary for this
# architecture) falls back to building this action's own source with cargo;
# a binary whose sha256 does not match fails the step, and nothing is cached.
# Cached under RUNNER_TOOL_CACHE/guildhall-image/X.Y.Z/<x64|arm64>/ with an
# `<arch>.complete` marker, as @actions/tool-cache lays tools out (a source
# build under X.Y.Z-source.<hash of the source>, since an unreleased version
# changes with every commit); a cached binary is checked against its
# recorded sha256 before use.
set -euo pipefail

here="$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
action_path="${GITHUB_ACTION_PATH:-$(dirname -- "$here")}"
tmp_root="${RUNNER_TEMP:-${TMPDIR:-/tmp}}"

# Messages go to stderr: stdout of the helpers below is their result (a
# path), and the runner reads workflow commands (::error::) from both.
die() {
  echo "::error title=guildhall-image::$*" >&2
  exit 1
}
note() { echo "guildhall-image action: $*" >&2; }

# The package version in a Cargo.toml (the first top-level `version =`).
cargo_version() {
  sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$1" | head -n 1
}

# A version we put into URLs and paths: X.Y.Z with an optional suffix.
valid_version() {
  [[ "$1" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$ ]]
}

sha256_of() {
  sha256sum -- "$1" | cut -d ' ' -f 1
}

# http_get URL FILE: prints the final HTTP status (000 when no answer);
# follows redirects (Forgejo redirects to object storage with SERVE_DIRECT,
# and to an attachment's external URL).
http_get() {
  command -v curl >/dev/null 2>&1 || die "curl is needed to download the binary (apt-get install curl)"
  curl -sS -L --proto '=https,http' --retry 3 --retry-delay 2 --connect-timeout 30 --max-time 600 \
    -o "$2" -w '%{http_code}' -- "$1" || true
}

# The tool-cache slot for VERSION ARCH.
cache_dir() {
  local cache="${RUNNER_TOOL_CACHE:-$tmp_root/tool-cache}"
  printf '%s/guildhall-image/%s/%s' "$cache" "$1" "$2"
}

# install_into_cache BINARY VERSION ARCH: move BINARY into the cache slot
# (atomically: a temporary sibling, then a rename), record its sha256 and
# mark the slot complete. Prints the cached binary's path.
install_into_cache() {
  local bin="$1" version="$2" arch="$3" dir parent tmp sum
  dir="$(cache_dir "$version" "$arch")"
  parent="$(dirname -- "$dir")"
  mkdir -p -- "$parent"
  tmp="$(mktemp -d "$parent/.$arch.XXXXXX")"
  sum="$(sha256_of "$bin")"
  install -m 0755 -- "$bin" "$tmp/guildhall-image"
  printf '%s\n' "$sum" > "$tmp/guildhall-image.sha256"
  rm -rf -- "$dir.complete" "$dir"
  if ! mv -T -- "$tmp" "$dir" 2>/dev/null; then
    # Another job on this runner filled the slot meanwhile: use it if whole.
    rm -rf -- "$tmp"
    [ "$(sha256_of "$dir/guildhall-image")" = "$(tr -d '[:space:]' < "$dir/guildhall-image.sha256")" ] \
      || die "could not install into the tool cache at $dir"
  fi
  : > "$dir.complete"
  printf '%s/guildhall-image' "$dir"
}

# cached VERSION ARCH: prints the cached binary when its slot is complete and
# the binary still has its recorded sha256.
cached() {
  local dir
  dir="$(cache_dir "$1" "$2")"
  [ -f "$dir.complete" ] && [ -x "$dir/guildhall-image" ] && [ -f "$dir/guildhall-image.sha256" ] || return 1
  [ "$(sha256_of "$dir/guildhall-image")" = "$(tr -d '[:space:]' < "$dir/guildhall-image.sha256")" ] || {
    note "the cached binary in $dir does not match its recorded sha256; downloading it again"
    return 1
  }
  printf '%s/guildhall-image' "$dir"
}

# download VERSION TARGET ARCH: prints the cached binary's path; returns 2
# when the release has no binary for TARGET (so the caller may build one).
download() {
  local version="$1" target="$2" arch="$3" releases asset base work code want got
  releases="${GUILDHALL_ACTION_RELEASES:?GUILDHALL_ACTION_RELEASES is not set}"
  releases="${releases%/}"
  asset="guildhall-image-v$version-$target"
  base="$releases/v$version"
  work="$(mktemp -d "$tmp_root/guildhall-image-download.XXXXXX")"
  # This runs in a command substitution (a subshell): clean up on its exit.
  # shellcheck disable=SC2064  # expand $work now
  trap "rm -rf -- '$work'" EXIT

  code="$(http_get "$base/SHA256SUMS" "$work/SHA256SUMS")"
  case "$code" in
    200) ;;
    404) note "no release v$version at $base (404 for SHA256SUMS)"; return 2 ;;
    *) die "downloading $base/SHA256SUMS failed (HTTP $code)" ;;
  esac
  want="$(awk -v n="$asset" '$2 == n || $2 == "*" n { print $1; exit }' "$work/SHA256SUMS")"
  if [ -z "$want" ]; then
    note "release v$version has no $asset in its SHA256SUMS"
    return 2
  fi
  [[ "$want" =~ ^[0-9a-f]{64}$ ]] || die "SHA256SUMS of v$version has no valid sha256 for $asset"

  code="$(http_get "$base/$asset" "$work/$asset")"
  [ "$code" = 200 ] || die "downloading $base/$asset failed (HTTP $code)"
  got="$(sha256_of "$work/$asset")"
  if [ "$got" != "$want" ]; then
    die "checksum mismatch for $asset from $base: SHA256SUMS says $want, the download has $got; nothing was installed"
  fi
  note "downloaded $asset (sha256 $got verified)"
  install_into_cache "$work/$asset" "$version" "$arch"
}

# A short hash of this action's source tree: source builds are cached per
# source, not per version (an unreleased version changes with every commit).
source_id() {
  (
    cd -- "$action_path"
    local -a parts=()
    local p
    for p in Cargo.toml Cargo.lock build.rs src; do [ -e "$p" ] && parts+=("$p"); done
    find "${parts[@]}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12
  )
}

# build_from_source VERSION ARCH SLOT: cargo install this action's own
# source into the cache slot SLOT (VERSION-source.ID).
build_from_source() {
  local version="$1" arch="$2" slot="$3" own root
  own="$(cargo_version "$action_path/Cargo.toml" 2>/dev/null || true)"
  [ -n "$own" ] || die "no prebuilt binary for v$version, and $action_path has no Cargo.toml to build one from"
  [ "$own" = "$version" ] || die "no prebuilt binary for v$version, and this action's source is v$own: use version $own, or the action at v$version"
  if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      note "no cargo on this runner: installing a minimal Rust toolchain with rustup"
      command -v curl >/dev/null 2>&1 || die "building from source needs cargo, or curl to install it"
      curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --no-modify-path >&2
      export PATH="$HOME/.cargo/bin:$PATH"
    fi
  fi
  root="$(mktemp -d "$tmp_root/guildhall-image-build.XXXXXX")"
  note "building guildhall-image v$version from $action_path with cargo (no prebuilt binary)"
  # CARGO_TARGET_DIR, when set, keeps the build between runs.
  cargo install --locked --quiet --path "$action_path" --root "$root" --bin guildhall-image >&2 \
    || die "building guildhall-image v$version from source failed"
  install_into_cache "$root/bin/guildhall-image" "$slot" "$arch"
  rm -rf -- "$root"
}

# Print the path of a guildhall-image binary of the wanted version.
install_binary() {
  local requested own version machine target="" arch="" bin="" rc slot
  own="$(cargo_version "$action_path/Cargo.toml" 2>/dev/null || true)"
  requested="${GUILDHALL_ACTION_VERSION:-}"
  if [ "$requested" = source ]; then
    version="$own"
  else
    version="${requested:-$own}"
    version="${version#v}"
  fi
  [ -n "$version" ] || die "no version given and none in $action_path/Cargo.toml"
  valid_version "$version" || die "version '$version' is not X.Y.Z"

  machine="$(uname -m)"
  case "$machine" in
    x86_64 | amd64) target=x86_64-unknown-linux-musl arch=x64 ;;
    aarch64 | arm64) target=aarch64-unknown-linux-musl arch=arm64 ;;
    *) arch="$machine" ;;
  esac
  [ "$(uname -s)" = Linux ] || target=""

  if [ "$requested" != source ] && [ -n "$target" ]; then
    if bin="$(cached "$version" "$arch")"; then
      note "using the cached guildhall-image v$version ($bin)"
    else
      rc=0
      bin="$(download "$version" "$target" "$arch")" || rc=$?
      [ "$rc" = 0 ] || [ "$rc" = 2 ] || exit "$rc"
      [ "$rc" = 0 ] || bin=""
    fi
  elif [ -z "$target" ]; then
    note "no prebuilt binaries for $(uname -s) $machine"
  fi
  if [ -z "$bin" ]; then
    slot="$version-source.$(source_id)"
    if bin="$(cached "$slot" "$arch")"; then
      note "using the cached source build of guildhall-image v$version ($bin)"
    else
      bin="$(build_from_source "$version" "$arch" "$slot")"
    fi
  fi

  # The binary must be the version asked for (a release asset under the
  # wrong tag, or a source tree that is not what it says, is refused).
  local says
  says="$("$bin" --version 2>/dev/null || true)"
  [ "$says" = "guildhall-image $version" ] || die "$bin says '${says:-nothing}', expected 'guildhall-image $version'"
  printf '%s\n' "$bin"
}

# The image tag of this ref: the tag name for a tag push, else the short
# commit; made a valid registry tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127}).
ref_tag() {
  local tag
  if [ "${GITHUB_REF_TYPE:-}" = tag ] && [ -n "${GITHUB_REF_NAME:-}" ]; then
    tag="$GITHUB_REF_NAME"
  else
    tag="${GITHUB_SHA:?GITHUB_SHA is not set and no tag was given}"
    tag="${tag:0:12}"
  fi
  tag="$(printf '%s' "$tag" | tr -c 'A-Za-z0-9._-' '-' | cut -c1-128)"
  case "$tag" in [A-Za-z0-9_]*) ;; *) tag="v$tag" ;; esac
  printf '%s\n' "$tag"
}

# Mask each line of a secret in the runner's log (belt and braces: a secret
# from `secrets.*` is masked already, a value from elsewhere may not be).
mask() {
  local line
  while IFS= read -r line; do
    [ -n "$line" ] && printf '::add-mask::%s\n' "$line"
  done <<< "$1"
}

# "key=value" into GITHUB_OUTPUT (values here are single-line).
output() {
  [ -n "${GITHUB_OUTPUT:-}" ] && printf '%s=%s\n' "$1" "$2" >> "$GITHUB_OUTPUT"
  return 0
}

run_action() {
  local command="${GUILDHALL_ACTION_COMMAND:-build}" to="${GUILDHALL_ACTION_TO:-}" bin tags tag
  local -a args=() extra=()
  case "$command" in build | push) ;; *) die "command must be build or push, not '$command'" ;; esac

  if [ -n "${GUILDHALL_IMAGE_PASSWORD:-}" ]; then
    mask "$GUILDHALL_IMAGE_PASSWORD"
  fi
  if [ -n "${GUILDHALL_IMAGE_USERNAME:-}" ] && [ -z "${GUILDHALL_IMAGE_PASSWORD:-}" ]; then
    echo "::warning title=guildhall-image::a username but no password was given (is the secret set?); pushing with the other credential sources"
  fi
  if [ -z "${GUILDHALL_IMAGE_USERNAME:-}" ] || [ -z "${GUILDHALL_IMAGE_PASSWORD:-}" ]; then
    unset GUILDHALL_IMAGE_USERNAME GUILDHALL_IMAGE_PASSWORD
  fi

  bin="$(install_binary)"
  dirname -- "$bin" >> "${GITHUB_PATH:-/dev/null}"
  output binary "$bin"

  local -a tag_list=()
  read -r -d '' -a tag_list <<< "${GUILDHALL_ACTION_TAG:-}" || true
  [ "${#tag_list[@]}" -gt 0 ] || tag_list=("$(ref_tag)")
  tags="${tag_list[*]}"
  read -r -d '' -a extra <<< "${GUILDHALL_ACTION_ARGS:-}" || true
  for tag in "${tag_list[@]}"; do args+=(--tag "$tag"); done
  output tag "${tag_list[0]}"

  local work digest_file json_file pushing=""
  work="$(mktemp -d "$tmp_root/guildhall-image-run.XXXXXX")"
  digest_file="$work/digest"
  json_file="$work/result.json"
  if [ "$command" = push ]; then
    pushing=1
    [ -n "$to" ] && args+=(--to "$to")
    args+=(--digest-file "$digest_file")
  elif [ -n "$to" ]; then
    pushing=1
    args+=(--push --to "$to" --digest-file "$digest_file")
  fi

  echo "+ guildhall-image --json $command ${args[*]} ${extra[*]}" >&2
  local rc=0
  "$bin" --json "$command" "${args[@]}" "${extra[@]}" > "$json_file" || rc=$?
  if [ "$rc" != 0 ]; then
    cat -- "$json_file" >&2 || true
    echo "::error title=guildhall-image::guildhall-image $command failed (exit $rc)"
    exit "$rc"
  fi

  # digest: from the digest file once the registry confirmed the manifest;
  # for a build alone, the manifest's digest from the JSON result (its first
  # "digest" key is the top-level one: keys are sorted, "config" < "digest").
  local digest reference=""
  if [ -n "$pushing" ]; then
    digest="$(tr -d '[:space:]' < "$digest_file")"
    reference="$(sed -n 's/^ *"reference": *"\([^"]*\)".*/\1/p' "$json_file" | head -n 1)"
  else
    digest="$(sed -n 's/^ *"digest": *"\(sha256:[0-9a-f]*\)".*/\1/p' "$json_file" | head -n 1)"
  fi
  [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || die "guildhall-image $command gave no digest"
  output digest "$digest"
  output reference "$reference"
  if [ -n "$pushing" ]; then
    echo "pushed $reference"
  else
    echo "built $digest (tags: $tags)"
  fi

  if [ "${GUILDHALL_ACTION_SUMMARY:-true}" = true ] && [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    {
      if [ -n "$pushing" ]; then
        echo "### guildhall-image: pushed ${reference%@*}"
        echo
        echo "| tags | digest |"
        echo "|---|---|"
        echo "| \`$tags\` | \`$digest\` |"
        echo
        echo "Pull by digest: \`$reference\`"
      else
        echo "### guildhall-image: built \`$tags\`"
        echo
        echo "Manifest digest: \`$digest\`"
      fi
      echo
    } >> "$GITHUB_STEP_SUMMARY"
  fi
  rm -rf -- "$work"
}

case "${1:-run}" in
  run) run_action ;;
  install) install_binary ;;
  tag) ref_tag ;;
  *) die "usage: run.sh [run|install|tag]" ;;
esac
