#!/usr/bin/env bash
# Debian packages Lamina needs on the host. Installs only what is missing, and only
# when running as root with apt-get (otherwise it says what to install).
set -euo pipefail
# bubblewrap, slirp4netns, libseccomp2, e2fsprogs and util-linux (setpriv, mount):
# the sandbox; mmdebstrap builds runtime images from Debian's packages; skopeo and
# umoci pull and unpack them from OCI registries; docker-registry serves one on
# loopback (tests).
packages=(python3-venv bubblewrap slirp4netns curl mmdebstrap skopeo umoci docker-registry
          libseccomp2 e2fsprogs util-linux)
# Optional: a QEMU guest to run the sandbox tests on cgroup v2 when the host boots
# with cgroup v1 (scripts/cgroup_v2_vm.py); without them that one test skips. And
# rabbitmq-server, the broker tests/test_rabbitmq.py starts privately on loopback
# (the RabbitMQ event source); without it those tests skip. postgresql: the server
# tests/test_postgres.py starts privately (initdb) on loopback. chromium and
# chromium-driver run the console's browser tests (tests/test_console.py) headless;
# without them those tests skip.
optional=(qemu-system-x86 busybox-static rabbitmq-server postgresql chromium chromium-driver)
missing() {
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
mapfile -t required < <(missing "${packages[@]}")
mapfile -t wanted < <(missing "${optional[@]}")
[ ${#required[@]} -eq 0 ] && [ ${#wanted[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages: ${required[*]} ${wanted[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  if [ ${#required[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${required[@]}" >/dev/null
  fi
  if [ ${#wanted[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${wanted[@]}" >/dev/null \
      || echo "warning: could not install ${wanted[*]}: the tests needing them will skip" >&2
  fi
else
  [ ${#required[@]} -gt 0 ] && echo "warning: please install these Debian packages: ${required[*]}" >&2
  [ ${#wanted[@]} -gt 0 ] && echo "note: for the cgroup v2 guest, RabbitMQ and console browser tests, install: ${wanted[*]}" >&2
fi
exit 0
