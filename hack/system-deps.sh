#!/usr/bin/env bash
# Install the Debian packages the tests use, when they are missing: the real Redis server, and
# tmux, the terminal the CLI's live views are checked in.
# Go (to build the test control plane once) and npm (to fetch helm) are expected on the machine.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v tmux >/dev/null 2>&1 || need+=(tmux)

# The dashboard's browser tests and benchmark: Debian's Chromium, driven by Playwright through
# its executable path (no browser is ever downloaded).
command -v chromium >/dev/null 2>&1 || need+=(chromium)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "missing ${need[*]}: install them with your package manager" >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
for tool in go npm; do
  command -v "$tool" >/dev/null 2>&1 || echo "warning: $tool not found; it is needed to build the test control plane or fetch helm" >&2
done

# The code sandbox: libseccomp (its filter is built through pyseccomp) and, for the tests that run
# the agent as a non-root user, a python3.11 that user may execute (the development interpreter
# may live under root's home).
sandbox_need=()
compgen -G '/usr/lib/*/libseccomp.so.2' >/dev/null || compgen -G '/lib/*/libseccomp.so.2' >/dev/null \
  || sandbox_need+=(libseccomp2)
[ -x /usr/bin/python3.11 ] || [ -x /usr/local/bin/python3.11 ] || sandbox_need+=(python3.11)
if [ ${#sandbox_need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "missing ${sandbox_need[*]}: install them with your package manager" >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "installing ${sandbox_need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${sandbox_need[@]}" >/dev/null
fi
