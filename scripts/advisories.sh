#!/usr/bin/env bash
# Checks the dependency tree (Cargo.lock) against the RustSec advisory database with cargo-deny
# (`cargo deny check advisories`, deny.toml's [advisories]), from a local copy of the database.
#
#   scripts/advisories.sh                 # fetch https://github.com/rustsec/advisory-db (needs github.com)
#   scripts/advisories.sh /path/to/advisory-db   # a clone or mirror of it (a bare repository works)
#   ADVISORY_DB=/path/to/advisory-db scripts/advisories.sh
#
# With a path, nothing is fetched: the copy is cloned into a temporary directory as cargo-deny
# expects it and checked with --offline, so the result is the database as of that copy's
# last commit (printed). Exits 1 on any vulnerability, unsoundness or yanked crate that deny.toml
# does not ignore with a reason. Needs cargo-deny (`cargo install --locked cargo-deny@0.20.2`).
set -euo pipefail
cd "$(dirname "$0")/.."

src="${1:-${ADVISORY_DB:-}}"
if [ -z "$src" ]; then
  exec cargo deny check advisories
fi
[ -d "$src" ] || { echo "advisories.sh: $src is not a directory" >&2; exit 2; }

# --offline: every crate of the lock file (all platforms) must be on disk for cargo metadata.
cargo fetch --locked --quiet
home="$(mktemp -d)"
trap 'rm -rf "$home"' EXIT
# cargo-deny keeps each database under db-path in a directory named after its URL; let it say
# which (it names the path it could not open), then put the copy there.
probe="$(AIRLOCK_ADVISORY_DB_PATH="$home" cargo deny --offline check advisories 2>&1 || true)"
dir="$(printf "%s\n" "$probe" | grep -o "$home/[A-Za-z0-9._-]*" | head -1 || true)"
[ -n "$dir" ] || { echo "advisories.sh: cargo-deny did not name its database directory:" >&2; printf '%s\n' "$probe" >&2; exit 2; }
git clone --quiet "$src" "$dir"
echo "advisory database: $(git -C "$dir" log -1 --format='%H %cI') ($(git -C "$dir" ls-files 'crates/*.md' | wc -l) crate advisories)"
AIRLOCK_ADVISORY_DB_PATH="$home" cargo deny --offline check advisories
