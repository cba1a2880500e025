# Sourced by the hack/*-deps.sh scripts: install missing Debian packages, as root or with sudo.
#   apt_install [--no-install-recommends] PACKAGE...
apt_install() {
  local options=()
  if [ "${1:-}" = --no-install-recommends ]; then options+=("$1"); shift; fi
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "missing $*: install them with your package manager" >&2
    exit 1
  fi
  local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${options[@]}" \
    -o DPkg::Lock::Timeout=600 "$@" >/dev/null
}
