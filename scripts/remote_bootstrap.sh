#!/usr/bin/env bash
# Idempotent host setup, run by `diffusionlm-remote bootstrap` on the GPU host.
# Usage: remote_bootstrap.sh ROOT INSTALL_TOOLS(0|1)
# Creates the directory layout and, when INSTALL_TOOLS=1, installs missing tools best-effort
# (uv, just, nvitop, tmux). Every step checks first, so running it twice changes nothing.
set -u
root="$1"
install_tools="${2:-1}"
export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"

mkdir -p "$root/src" "$root/runs" "$root/data" "$root/configs" "$root/env" || exit 1
chmod 700 "$root/env"

have() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif have sudo && sudo -n true 2>/dev/null; then sudo -n "$@"; else return 1; fi; }

if ! have python3; then
  echo "error: python3 not found on the host; install Python >= 3.11 first" >&2
  exit 1
fi

if [ "$install_tools" = 1 ]; then
  if ! have tmux; then
    if have apt-get; then as_root apt-get install -y -qq tmux >/dev/null 2>&1 || \
      { as_root apt-get update -qq >/dev/null 2>&1 && as_root apt-get install -y -qq tmux >/dev/null 2>&1; }
    elif have dnf; then as_root dnf install -y -q tmux >/dev/null 2>&1
    elif have yum; then as_root yum install -y -q tmux >/dev/null 2>&1
    fi
  fi
  if ! have uv; then
    if have curl; then curl -LsSf https://astral.sh/uv/install.sh | sh >/dev/null 2>&1
    else python3 -m pip install --user -q uv >/dev/null 2>&1
    fi
  fi
  for tool in just:rust-just nvitop:nvitop; do
    cmd="${tool%%:*}"; pkg="${tool#*:}"
    if ! have "$cmd"; then
      if have uv; then uv tool install -q "$pkg" >/dev/null 2>&1
      else python3 -m pip install --user -q "$pkg" >/dev/null 2>&1
      fi
    fi
  done
fi

for cmd in tmux uv just nvitop rsync; do
  if have "$cmd"; then echo "ok      $cmd"; else echo "missing $cmd"; fi
done
if ! have tmux; then
  echo "error: tmux is required for training sessions and could not be installed" >&2
  exit 1
fi
exit 0
