#!/usr/bin/env bash
# Install sandboxd on a fresh Debian/Ubuntu host (as root) and start it on 127.0.0.1:8080.
# Idempotent and fast the second time: each step checks before it acts.
#   --no-start   install only; do not start `sandboxd serve`
set -euo pipefail

START=1
for arg in "$@"; do
  case "$arg" in
    --no-start) START=0 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo ./scripts/install.sh)" >&2; exit 1; }
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
say() { printf '==> %s\n' "$*"; }
T0=$(date +%s)

# 1. System packages (only the missing ones; apt is not touched when everything is there).
PACKAGES=(crun runc mmdebstrap tini nftables umoci uidmap iproute2 e2fsprogs golang-github-containers-common
          python3 python3-venv python3-pip ca-certificates debian-archive-keyring curl git postgresql tmux nodejs npm procps psmisc util-linux
          zstd  # compressed memory images of evicted sandboxes (docs/snapshots.md)
          lxcfs  # each sandbox's own /proc/meminfo, cpuinfo, stat, uptime (runtime/lxcfs.py)
          skopeo  # FROM images in the registries the operator names (templates/registry.py)
          busybox-static musl-tools  # the test images without Python (tests/support/images.py)
          esbuild r-base-core r-cran-irkernel  # TypeScript and R cells of the code interpreter (host agent tests)
          default-jdk-headless  # Java cells of the code interpreter (host agent tests)
          # desktop automation, for the agent's desktop tests run on the host
          tigervnc-standalone-server tigervnc-tools openbox xdotool wmctrl xclip x11-utils x11-xserver-utils
          ffmpeg xterm python3-tk tesseract-ocr tesseract-ocr-eng vncsnapshot)
missing=()
for p in "${PACKAGES[@]}"; do
  # A Node.js from elsewhere (e.g. NodeSource, which bundles npm and conflicts with Debian's npm) is fine.
  case "$p" in nodejs) command -v node >/dev/null && continue ;; npm) command -v npm >/dev/null && continue ;;
    default-jdk-headless) command -v jshell >/dev/null && continue ;; esac  # any JDK with JShell will do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  say "system packages: all present"
fi

# 2. A Python >= 3.11 and the project's virtualenv in the checkout.
pick_python() {
  for c in python3.13 python3.12 python3.11 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}
if [ ! -x .venv/bin/python ]; then
  PY="$(pick_python)" || {
    say "no python >= 3.11 found: installing python3.11"
    apt-get install -y -qq python3.11 python3.11-venv; PY="$(pick_python)"; }
  say "creating .venv with $PY"
  "$PY" -m venv .venv
fi
# Re-install only when the dependency list changed.
STAMP=.venv/.sandboxd-install-stamp
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || ! .venv/bin/python -c 'import sandboxd' 2>/dev/null; then
  say "pip install -e '.[test]'"
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$WANT" > "$STAMP"
else
  say "python dependencies: up to date"
fi
ln -sfn "$REPO/.venv/bin/sandboxd" /usr/local/bin/sandboxd
# The client-only package's dependencies as wheels, so its test installs it in a fresh venv with no download.
CSTAMP=.venv/wheelhouse/.stamp
CWANT="$(sha256sum clients/python/pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$CSTAMP" 2>/dev/null)" != "$CWANT" ]; then
  say "client package dependencies -> .venv/wheelhouse"
  .venv/bin/python - > .venv/client-requirements.txt <<'PY'
import tomllib
print("\n".join(tomllib.load(open("clients/python/pyproject.toml", "rb"))["project"]["dependencies"]))
PY
  .venv/bin/python -m pip download -q -d .venv/wheelhouse -r .venv/client-requirements.txt
  echo "$CWANT" > "$CSTAMP"
fi

# 3. Host preparation and the built-in template images (built only when missing; seconds otherwise).
say "sandboxd setup"
/usr/local/bin/sandboxd setup

# 4. Start the platform in the background, unless asked not to or already running.
if [ "$START" -eq 1 ]; then
  DATA="${SANDBOXD_DATA_DIR:-/var/lib/sandboxd}"
  mkdir -p "$DATA"
  PIDFILE="$DATA/sandboxd.pid"
  if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    say "sandboxd is already running (pid $(cat "$PIDFILE"))"
  elif ! /usr/local/bin/sandboxd serve --help >/dev/null 2>&1; then
    say "this version has no 'sandboxd serve' yet: not starting"
  else
    say "starting sandboxd serve (log $DATA/sandboxd.log)"
    setsid nohup /usr/local/bin/sandboxd serve >>"$DATA/sandboxd.log" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    HOST="${SANDBOXD_HOST:-127.0.0.1}"; PORT="${SANDBOXD_PORT:-8080}"
    [ "$HOST" = "0.0.0.0" ] && HOST=127.0.0.1
    for _ in $(seq 1 60); do
      if curl -s -o /dev/null "http://$HOST:$PORT/"; then break; fi
      kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { echo "sandboxd serve exited; see $DATA/sandboxd.log" >&2; tail -20 "$DATA/sandboxd.log" >&2; exit 1; }
      sleep 0.5
    done
    say "sandboxd is listening on http://$HOST:$PORT (pid $(cat "$PIDFILE"))"
    grep -h "first admin API key" "$DATA/sandboxd.log" | tail -1 || true
  fi
fi
say "done in $(( $(date +%s) - T0 ))s"
