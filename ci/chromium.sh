#!/usr/bin/env bash
# Install Debian's chromium and chromium-driver, the headless browser the docs tests
# (tests/docs/test_docs.py) drive through Selenium. Does nothing when both are there.
#
#   bash ci/chromium.sh          # install if missing (root, Debian)
#   bash ci/chromium.sh check    # exit 0 when both are installed
set -euo pipefail
PACKAGES=(chromium chromium-driver)
COMMANDS=(/usr/bin/chromium /usr/bin/chromedriver)

log() { printf 'chromium.sh: %s\n' "$*" >&2; }
die() { printf 'chromium.sh: error: %s\n' "$*" >&2; exit 1; }

installed() {
    local c
    for c in "${COMMANDS[@]}"; do [[ -x $c ]] || return 1; done
}

install() {
    installed && return 0
    [[ $(id -u) -eq 0 ]] || die "must run as root to install ${PACKAGES[*]}"
    command -v apt-get >/dev/null || die "no apt-get: install ${PACKAGES[*]} by hand"
    log "installing ${PACKAGES[*]} (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine has no package lists yet: update only when apt cannot see them.
    if ! apt-cache show chromium-driver >/dev/null 2>&1; then
        apt-get update -q >&2 || die "apt-get update failed"
    fi
    # Another script may be installing its own packages at the same time: wait for
    # dpkg's lock instead of failing at once.
    local apt=(apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends)
    "${apt[@]}" "${PACKAGES[@]}" >&2 \
        || { apt-get -o DPkg::Lock::Timeout=300 update -q >&2 && "${apt[@]}" "${PACKAGES[@]}" >&2; } \
        || die "apt-get install ${PACKAGES[*]} failed"
    installed || die "packages installed but missing: ${COMMANDS[*]}"
}

case "${1:-install}" in
    install) install ;;
    check) installed ;;
    *) die "usage: $0 [install|check]" ;;
esac
