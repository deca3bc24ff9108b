#!/usr/bin/env bash
# Make sure the real services the test suite talks to are up. Idempotent.
set -euo pipefail

# PostgreSQL on 127.0.0.1:5432, database `test` (started the way the machine notes say).
if command -v pg_isready >/dev/null 2>&1; then
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    echo "services: starting PostgreSQL" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
  fi
fi

# Debian's Chromium for the browser test (Playwright's own browser download cannot work here).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "services: installing Debian's chromium" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >&2 \
      || echo "services: could not install chromium; browser tests will say so" >&2
  else
    echo "services: chromium missing and not root: browser tests will skip" >&2
  fi
fi
