#!/usr/bin/env bash
# Runs the embedded demo (one process, SQLite, generated stream) after a runtime-only install.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

bash ops/install.sh
exec .venv/bin/unmask demo "$@"
