#!/usr/bin/env bash
# Create or refresh the project environment on the host, run by `diffusionlm-remote build`.
# Usage: remote_build.sh ROOT PYTHON SYSTEM_SITE(0|1)
# SYSTEM_SITE=1: the venv sees the system's packages (torch already there) and the project is
# installed with --no-deps --no-index, so nothing is downloaded.
set -euo pipefail
root="$1"; python="$2"; system_site="${3:-0}"
export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"
cd "$root"
venv="$root/.venv"

want_site=false; [ "$system_site" = 1 ] && want_site=true
if [ -f "$venv/pyvenv.cfg" ]; then
  have_site=$(sed -n 's/^include-system-site-packages *= *//p' "$venv/pyvenv.cfg")
  if [ "$have_site" != "$want_site" ]; then
    echo "venv system-site setting changed ($have_site -> $want_site): recreating"
    rm -rf "$venv"
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  # With system site packages, skip the venv's own pip/setuptools (3.11 bundles an old setuptools that
  # would shadow the system one and cannot build without downloading `wheel`); the system pip serves.
  site_flag=(); [ "$system_site" = 1 ] && site_flag=(--system-site-packages --without-pip)
  if command -v uv >/dev/null 2>&1 && [ "$system_site" != 1 ]; then
    uv venv -q --python "$python" "$venv"
  else
    "$python" -m venv "${site_flag[@]}" "$venv"
  fi
fi

if [ "$system_site" = 1 ]; then
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation --no-index -e "$root/src"
elif command -v uv >/dev/null 2>&1; then
  uv pip install -q --python "$venv/bin/python" -e "$root/src"
else
  "$venv/bin/python" -m pip install -q -e "$root/src"
fi
"$venv/bin/python" -c "import cli, config, remote; print('environment ready:', cli.__file__.rsplit('/cli/', 1)[0])"
