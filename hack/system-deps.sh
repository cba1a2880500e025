#!/usr/bin/env bash
# Install the Debian packages the tests use, when they are missing: the real Redis server, and
# tmux, the terminal the CLI's live views are checked in.
# Go (to build the test control plane once) and npm (to fetch helm) are expected on the machine.
set -euo pipefail
. "$(dirname "$0")/apt.sh"

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v tmux >/dev/null 2>&1 || need+=(tmux)

# The dashboard's browser tests and benchmark: Debian's Chromium, driven by Playwright through
# its executable path (no browser is ever downloaded).
command -v chromium >/dev/null 2>&1 || need+=(chromium)

apt_install ${need[@]+"${need[@]}"}
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
apt_install ${sandbox_need[@]+"${sandbox_need[@]}"}
