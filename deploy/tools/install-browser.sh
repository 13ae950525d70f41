#!/usr/bin/env bash
# Install the headless browser the settings-page test drives (idempotent; a second run
# only verifies):
#
#   chromium, chromium-driver   Debian's packages: the browser and its WebDriver. Selenium
#                               (a dev dependency in pyproject.toml) is pointed at both by
#                               path, so nothing is downloaded when the tests run.
#   fonts-dejavu-core           so the page's text renders in the screenshot.
#
# Needs root (or sudo) for apt-get when the packages are missing. The test fails, rather
# than skips, when the browser is not there.
set -euo pipefail

log() { printf 'browser: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root (or sudo) to run: $*"
  fi
}

PACKAGES=(chromium chromium-driver fonts-dejavu-core)

installed() {
  command -v chromium >/dev/null && command -v chromedriver >/dev/null \
    && [ -d /usr/share/fonts/truetype/dejavu ]
}

if ! installed; then
  command -v apt-get >/dev/null || die "apt-get not found: install ${PACKAGES[*]} another way"
  log "installing Debian's ${PACKAGES[*]}"
  as_root apt-get update -qq || die "apt-get update failed"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${PACKAGES[@]}" >/dev/null || die "apt-get install ${PACKAGES[*]} failed"
  installed || die "chromium or chromedriver still missing after apt-get install"
fi
log "ready: $(chromium --version 2>/dev/null | head -1), $(chromedriver --version | head -1)"
