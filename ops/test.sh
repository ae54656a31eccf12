#!/usr/bin/env bash
# The test command (README, CI): install with dev tools, start the local Kafka and PostgreSQL,
# export their URLs, run pytest with the given arguments (default: the whole suite).
# Exits with pytest's status; "no tests collected" (5) fails too, since CI must run tests.
# Services stay up afterwards for the next run; `ops/services.sh stop` ends them.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

bash ops/install.sh --dev
bash ops/services.sh start
eval "$(bash ops/services.sh env)"

set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
    echo "test: pytest collected no tests; failing (exit 5)" >&2
fi
exit "$rc"
