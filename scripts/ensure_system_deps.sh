#!/usr/bin/env bash
# Install the system libraries MuJoCo needs to render headless (EGL through Mesa), if missing.
set -euo pipefail

missing=()
for lib in libEGL.so.1 libGL.so.1 libEGL_mesa.so.0; do
  if ! ldconfig -p 2>/dev/null | grep -q "$lib"; then
    missing+=("$lib")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

packages="libegl1 libgl1 libegl-mesa0"
echo "jflow: headless rendering needs ${missing[*]}; installing Debian packages: $packages"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "jflow: apt-get not found; install the EGL/Mesa libraries ($packages on Debian) yourself" >&2
  exit 1
fi
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo"; else
    echo "jflow: run as root or install $packages yourself" >&2
    exit 1
  fi
fi
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq $packages
