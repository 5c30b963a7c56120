#!/usr/bin/env bash
# Set up everything nora-bench needs on a fresh Debian machine: the GL libraries for headless
# EGL rendering (when missing and when root), .venv with the project and its pinned stack.
# Usage: scripts/setup.sh [--test]   (--test adds what the test suite needs: pytest, Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

apt_pkgs=(libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libglx-mesa0 libosmesa6)
[ $want_test = 1 ] && apt_pkgs+=(chromium)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: WARNING: missing Debian packages (${missing[*]}); install them as root for headless rendering" >&2
  fi
fi

PY=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi

extras=""
[ $want_test = 1 ] && extras="[test]"
# Re-install only when the project's requirements changed.
stamp=".venv/.nora-bench-installed$extras-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing nora-bench$extras and its pinned stack into .venv (a few minutes the first time)"
  .venv/bin/pip install -q -e ".$extras"
  touch "$stamp"
fi
