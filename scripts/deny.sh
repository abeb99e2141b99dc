#!/usr/bin/env bash
# `make deny`: cargo deny against deny.toml, offline, with RustSec's advisory database fetched from
# GitHub or, where GitHub is out of reach, cloned from a local mirror (ADVISORY_DB_MIRROR, a git
# repository of rustsec/advisory-db). Installs cargo-deny when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deny >/dev/null || cargo install cargo-deny --locked
db="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-3157b0e258782691"
mirror="${ADVISORY_DB_MIRROR:-/work/.mirror/rustsec+advisory-db/repo}"
if ! cargo deny fetch db >/dev/null 2>&1; then
  if [ -d "$mirror" ]; then
    rm -rf "$db"
    mkdir -p "$(dirname "$db")"
    git clone -q "$mirror" "$db"
  fi
  [ -d "$db" ] || { echo "deny: no advisory database: GitHub is out of reach and $mirror does not exist"; exit 1; }
fi
echo "deny: advisory database of $(git -C "$db" log -1 --format=%cs)"
cargo deny --offline check
