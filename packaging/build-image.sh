#!/usr/bin/env bash
# Builds airlock's container image (packaging/Containerfile) without pulling a base image.
#
#   packaging/build-image.sh [BINARY] [TAG]
#
# BINARY defaults to target/release/airlock (any build works: the image takes what it is given),
# TAG to localhost/airlock:latest. The build context is staged in a temporary directory: the
# binary at /usr/local/bin/airlock, each shared library `ldd BINARY` names at the path it names
# (the loader, libc, libm, libgcc_s), /etc/passwd and /etc/group with the user airlock
# (10001:10001), and the host's CA bundle at /etc/ssl/certs/ca-certificates.crt.
# Extra arguments for `podman build` go in PODMAN_BUILD_ARGS.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../target/release/airlock}"
tag="${2:-localhost/airlock:latest}"
ca=/etc/ssl/certs/ca-certificates.crt

[ -x "$bin" ] || { echo "build-image.sh: $bin is not an executable (cargo build --release)" >&2; exit 2; }
[ -r "$ca" ] || { echo "build-image.sh: $ca is missing (apt-get install ca-certificates)" >&2; exit 2; }
command -v podman >/dev/null || { echo "build-image.sh: podman is missing (apt-get install podman)" >&2; exit 2; }

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
install -d -m 0755 "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/var/lib"
install -m 0755 "$bin" "$root/usr/local/bin/airlock"

# The libraries: "name => /path (addr)" lines, and the loader's "/path (addr)" line. The vDSO
# has no file. Each is copied (symbolic links followed) to the path the binary asks for.
libs="$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')"
[ -n "$libs" ] || { echo "build-image.sh: ldd found no libraries in $bin (a static binary needs none; not supported here)" >&2; exit 2; }
for lib in $libs; do
  install -d -m 0755 "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
  chmod 0755 "$root$lib"
done

printf 'airlock:x:10001:10001:airlock:/var/lib/airlock:/nonexistent\n' > "$root/etc/passwd"
printf 'airlock:x:10001:\n' > "$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"
install -m 0644 "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
# /var/lib/airlock: 0700, the user's (COPY --chown in the Containerfile); /var/lib stays root's.
install -d -m 0700 "$ctx/data/airlock"

cp "$here/Containerfile" "$ctx/Containerfile"
# shellcheck disable=SC2086
podman build ${PODMAN_BUILD_ARGS:-} --no-cache --pull=never -f "$ctx/Containerfile" -t "$tag" "$ctx"
