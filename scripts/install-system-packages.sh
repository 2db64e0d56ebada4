#!/usr/bin/env bash
# Debian packages Lamina needs on the host. Installs only what is missing, and only
# when running as root with apt-get (otherwise it says what to install).
set -euo pipefail
# mmdebstrap builds runtime images from Debian's packages; skopeo and umoci pull
# and unpack them from OCI registries; docker-registry serves one on loopback (tests).
packages=(python3-venv bubblewrap slirp4netns curl mmdebstrap skopeo umoci docker-registry libseccomp2 e2fsprogs util-linux)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "warning: please install these Debian packages: ${missing[*]}" >&2
fi
