#!/usr/bin/env bash
# Run the whole test suite, as CI does: install what is needed, start a throw-away PostgreSQL for the
# store tests, then pytest over tests/. Fails when pytest fails or collects nothing.
# Arguments replace the default `tests` given to pytest (e.g. scripts/test.sh tests/unit -x).
set -euo pipefail

[ "$(id -u)" -eq 0 ] || { echo "test.sh: run as root (sudo ./scripts/test.sh)" >&2; exit 1; }
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"

# The package registries some tests install from inside a sandbox (a RUN step's `pip install`) may resolve
# to a range the egress floor closes (a mirror or proxy on a private or reserved address). The test host's
# operator opens exactly those addresses, as docs/install.md tells operators to; public ones pass anyway.
if [ -z "${SANDBOXD_EGRESS_ALLOW_CIDRS+x}" ]; then
  SANDBOXD_EGRESS_ALLOW_CIDRS="$(for h in pypi.org files.pythonhosted.org registry.npmjs.org deb.debian.org; do
    { getent ahostsv4 "$h" || true; } | awk '{print $1 "/32"}'; done | sort -u | paste -sd, -)"
  export SANDBOXD_EGRESS_ALLOW_CIDRS
  echo "==> registries opened under the egress floor: ${SANDBOXD_EGRESS_ALLOW_CIDRS:-none}"
fi

bash scripts/install.sh --no-start

# Tests only: Debian's registry server, which a template test starts on a loopback port. Its packaged service
# is neither started nor left enabled.
if ! command -v docker-registry >/dev/null; then
  POLICY=/usr/sbin/policy-rc.d
  [ -e "$POLICY" ] || { printf '#!/bin/sh\nexit 101\n' > "$POLICY"; chmod +x "$POLICY"; trap 'rm -f /usr/sbin/policy-rc.d' EXIT; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry
  rm -f /usr/sbin/policy-rc.d; trap - EXIT
  if [ -d /run/systemd/system ]; then systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi
fi

# Tests only: Debian's Chromium, which the dashboard's browser tests drive through Playwright (tests/support/browser.py).
if ! command -v chromium >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi

# In CI (and after install.sh) nothing that matters may skip: real-sandbox tests fail instead of skipping.
export CI="${CI:-true}"
export SANDBOXD_TEMPLATES_PATH="${SANDBOXD_TEMPLATES_PATH:-${SANDBOXD_DATA_DIR:-/var/lib/sandboxd}/templates}"

# A private PostgreSQL cluster on a free loopback port, removed on exit.
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[ -x "$PGBIN/initdb" ] || { echo "test.sh: PostgreSQL binaries not found under /usr/lib/postgresql" >&2; exit 1; }
PGDIR="$(mktemp -d /tmp/sandboxd-test-pg.XXXXXX)"
chown postgres: "$PGDIR"
PGPORT="$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cleanup() {
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PGDIR"
}
trap cleanup EXIT
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/pg.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDIR -c fsync=off -c max_connections=200" start >/dev/null
runuser -u postgres -- "$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres sandboxd_test
export SANDBOXD_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$PGPORT/sandboxd_test"
echo "==> PostgreSQL for the store tests: $SANDBOXD_TEST_POSTGRES_URL"

# ruff and mypy (scripts/lint.sh, configured in pyproject.toml): a finding fails the run, after the tests ran.
set +e
echo "==> lint: ruff and mypy"
bash scripts/lint.sh
lint=$?

# The suite runs in parallel workers (pytest-xdist; tests/conftest.py groups a file's tests in one worker), then
# the tests marked `serial` (they change what the whole host shares) alone. The whole of it must stay under 30
# minutes; a hung run is a failure, not a stuck CI job.
targets=("$@"); [ "${#targets[@]}" -gt 0 ] || targets=(tests)
junit="${SANDBOXD_JUNIT_XML:-/tmp/sandboxd-junit.xml}"
deadline=$((SECONDS + 1800))
pytest_part() {
  [ "$((deadline - SECONDS))" -gt 0 ] || return 124
  timeout --signal=INT --kill-after=60 $((deadline - SECONDS)) .venv/bin/python -m pytest -q -ra --color=no \
    -p no:cacheprovider "$@"
}
pytest_part -n "${SANDBOXD_TEST_WORKERS:-3}" --dist loadgroup -m "not serial" --junitxml="$junit" "${targets[@]}"
rc=$?
rc_serial=5
if [ "$rc" -ne 124 ]; then
  echo "==> the tests that change what the whole host shares, alone"
  pytest_part -m serial --junitxml="${junit%.xml}-serial.xml" "${targets[@]}"
  rc_serial=$?
fi
if [ "$rc" -eq 124 ] || [ "$rc_serial" -eq 124 ]; then rc=124
elif [ "$rc" -eq 5 ]; then rc=$rc_serial
elif [ "$rc" -eq 0 ] && [ "$rc_serial" -ne 5 ]; then rc=$rc_serial
fi
set -e
if [ "$rc" -eq 0 ] && [ "$lint" -ne 0 ]; then echo "==> tests passed, but lint found problems (above)" >&2; rc=1
fi
case "$rc" in
  0) echo "==> tests and lint passed" ;;
  5) echo "==> no tests were collected: that is a failure" >&2; rc=1 ;;
  124) echo "==> the suite exceeded 30 minutes" >&2 ;;
  *) echo "==> tests failed (pytest exit code $rc)" >&2 ;;
esac
exit "$rc"
