#!/usr/bin/env bash
# Install the system pieces the test suite needs on a Debian CI machine:
#   - headless Chromium + fonts (real-browser layout tests, tests/helpers/browser.py)
#   - PostgreSQL (a throwaway cluster per test session, tests/helpers/postgres.py)
#   - Dovecot's IMAP server (the bounce-mailbox reader's tests, tests/helpers/dovecot.py;
#     the tests start their own instance, the packaged service is not needed)
#   - NSD, an authoritative DNS server (newsletter doctor's tests, tests/helpers/nsd.py: own config,
#     loopback port) and opendkim-tools (opendkim-testmsg verifies our DKIM signatures)
#   - Postfix, a real relay (tests/helpers/postfix.py starts a private instance as root: own config,
#     queue and loopback port); installed with debconf's "No configuration": the packaged service
#     is never set up, started or needed
#   - Java (default-jre-headless) for the Nu HTML checker (tests/test_web_page.py)
#   - SpamAssassin 4, run locally (-L) on a sent example (tests/test_spamassassin.py)
#   - Stoplight Prism (SendGrid contract mock, tests/helpers/prism.py), vnu-jar (the Nu
#     HTML checker), official mjml (the reference compile, tests/test_email_fidelity.py) and
#     axe-core (WCAG checks in Chromium) from the committed .ci/package-lock.json
# Idempotent: steps already done are skipped. Run as root (or with sudo available).
set -euo pipefail

CI_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
APT_PACKAGES=(chromium fonts-dejavu-core fonts-liberation dovecot-imapd default-jre-headless postgresql spamassassin nsd opendkim-tools postfix)

log() { printf 'install-system: %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    log "must run as root (or with sudo)"; exit 1
  fi
fi

missing_packages() {
  local pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
      printf '%s\n' "$pkg"
    fi
  done
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  log "apt-get update"
  $SUDO apt-get update -qq >/dev/null
  log "apt-get install $*"
  $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# 1. Chromium, fonts and Dovecot -------------------------------------------------------
mapfile -t missing < <(missing_packages "${APT_PACKAGES[@]}")
# Node/npm for Prism: Debian's nodejs (18.20.x) satisfies prism-cli's engines (>=18.20.1).
if ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if printf '%s\n' "${missing[@]}" | grep -qx postfix; then
  # no questions, no /etc/postfix/main.cf, no running service: the tests bring their own instance
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
fi
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
else
  log "apt packages already installed: ${APT_PACKAGES[*]}"
fi
log "$(chromium --version 2>/dev/null || echo 'chromium: not runnable')"

log "$(java -version 2>&1 | head -n 1 || echo 'java: not runnable')"

# 2. Prism and vnu-jar (from the committed lock file) --------------------------
prism="$CI_DIR/node_modules/.bin/prism"
vnu="$CI_DIR/node_modules/vnu-jar/build/dist/vnu.jar"
stamp="$CI_DIR/node_modules/.package-lock.json"   # written by npm on install
if [ -x "$prism" ] && [ -f "$stamp" ] && [ "$stamp" -nt "$CI_DIR/package-lock.json" ] \
   && [ -f "$vnu" ] && [ -d "$CI_DIR/node_modules/mjml" ] && [ -d "$CI_DIR/node_modules/axe-core" ] \
   && "$prism" --version >/dev/null 2>&1; then
  log "prism, vnu-jar, mjml and axe-core already installed"
else
  log "npm ci --prefix $CI_DIR"
  npm ci --prefix "$CI_DIR" --no-audit --no-fund --loglevel=error >/dev/null
fi
log "prism $("$prism" --version) (node $(node --version)), vnu $(java -jar "$vnu" --version)"
