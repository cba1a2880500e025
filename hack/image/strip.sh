#!/bin/sh
# Strip debug symbols from the native extensions installed under $1 (the image's venv): about
# 18 MB of the wheels' shared objects are symbols no one reads in a container. Needs binutils;
# runs on the build host (make image) or in the Dockerfile's build stage, never in the image.
set -eu
[ -d "$1" ] || { echo "strip.sh: $1 is not a folder" >&2; exit 1; }
command -v strip >/dev/null || { echo "strip.sh: strip (binutils) is missing" >&2; exit 1; }
find "$1" -type f \( -name '*.so' -o -name '*.so.*' \) -exec strip --strip-unneeded {} +
