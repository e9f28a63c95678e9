#!/usr/bin/env bash
# The test command: installs redis-server (with redis-cli) when it is
# missing, since the Redis store tests start their own servers, then runs
# the whole test suite. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "== installing redis-server (Debian package redis-server) for the Redis store tests"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi

exec cargo test --workspace --all-features "$@"
