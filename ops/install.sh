#!/usr/bin/env bash
# Prepares a Debian (bookworm) machine for unmask: system packages via apt (only the missing
# ones, as root or through sudo), then .venv in the repo root with the package installed
# editable. Safe to run repeatedly; a second run with nothing to do takes about a second.
#
#   ops/install.sh          runtime dependencies (enough for `unmask demo`)
#   ops/install.sh --dev    plus test and lint tools (what ops/test.sh needs)
#   ops/install.sh --force  reinstall the Python package even if nothing changed
#   ops/install.sh --check  list missing system packages (exit 1 if any), change nothing
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
STAMP="$VENV/.unmask-install"

# ---- System packages. Extend this list; one entry per package as "debian-package:probe".
# The probe is a command whose presence on PATH counts as "already installed" (for tools that
# may come from elsewhere, e.g. a JDK from SDKMAN); with an empty probe the dpkg status decides.
APT_PACKAGES=(
    "python3-venv:"
    "openjdk-17-jre-headless:java"
    "maven:mvn"
    "chromium:chromium"
    "chromium-driver:chromedriver"
    "prometheus:promtool"
)
# PostgreSQL server: only when no server binaries exist (see pg_server_present below).
PG_APT_PACKAGE="postgresql"

say() { echo "install: $*"; }
die() { echo "install: error: $*" >&2; exit 1; }

DEV=0
FORCE=0
CHECK=0
for arg in "$@"; do
    case "$arg" in
        --dev) DEV=1 ;;
        --force) FORCE=1 ;;
        --check) CHECK=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown argument: $arg (use --dev, --force, --check)" ;;
    esac
done

dpkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

pg_server_present() {
    compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null && return 0
    if command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir)/postgres" ]]; then
        return 0
    fi
    command -v postgres >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1
}

missing_packages() {
    local entry pkg probe
    for entry in "${APT_PACKAGES[@]}"; do
        pkg="${entry%%:*}"
        probe=""
        [[ "$entry" == *:* ]] && probe="${entry#*:}"
        if [[ -n "$probe" ]]; then
            command -v "$probe" >/dev/null 2>&1 && continue
        else
            dpkg_installed "$pkg" && continue
        fi
        echo "$pkg"
    done
    pg_server_present || echo "$PG_APT_PACKAGE"
}

install_system_packages() {
    local missing
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then
        say "system packages present"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 \
        || die "missing ${missing[*]} and apt-get is not available; install them by hand"
    local sudo=()
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 \
            || die "missing ${missing[*]}; run as root or install sudo (apt-get install ${missing[*]})"
        sudo=(sudo)
    fi
    say "installing ${missing[*]} with apt-get"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}"
}

find_python() {
    local candidate
    for candidate in python3 python3.13 python3.12 python3.11; do
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

ensure_venv() {
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        return 0
    fi
    local python
    python="$(find_python)" || die "no python3 >= 3.11 found on PATH"
    say "creating $VENV with $python ($("$python" --version 2>&1))"
    "$python" -m venv "$VENV" \
        || die "python -m venv failed; on Debian install python3-venv (apt-get install python3-venv)"
}

install_python_package() {
    [[ -f "$REPO/pyproject.toml" ]] || die "$REPO/pyproject.toml not found"
    local extras="" want
    ((DEV)) && extras="[dev]"
    want="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1) dev=$DEV"
    if ((!FORCE)) && [[ -f "$STAMP" ]]; then
        local have_hash have_dev
        read -r have_hash have_dev <"$STAMP" || true
        # A dev install also satisfies a runtime-only request.
        if [[ "$have_hash" == "${want%% *}" && ( "$have_dev" == "dev=1" || $DEV -eq 0 ) ]] \
            && "$VENV/bin/python" -c 'import pipeline' 2>/dev/null; then
            say "python package up to date in $VENV"
            return 0
        fi
    fi
    say "pip install -e '.$extras' into $VENV"
    local log="$VENV/pip-install.log"
    if ! (cd "$REPO" && "$VENV/bin/python" -m pip install -e ".$extras") >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "pip install failed; full log: $log"
    fi
    echo "$want" >"$STAMP"
}

if ((CHECK)); then
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) && { say "system packages present"; exit 0; }
    say "missing: ${missing[*]}"
    exit 1
fi

t0=$SECONDS
exec 9>"${TMPDIR:-/tmp}/unmask-install-$(echo "$REPO" | cksum | cut -d' ' -f1).lock"
flock -w 600 9 || die "another ops/install.sh for $REPO is still running"
install_system_packages
ensure_venv
install_python_package
say "done in $((SECONDS - t0))s"
