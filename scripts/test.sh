#!/usr/bin/env bash
# Install what the test suite needs on Debian 12 and run it (as root: the end-to-end tests build
# network namespaces and boot QEMU guests). Used as-is by CI (.ci/run) and the README.
#   scripts/test.sh              the whole suite, including the QEMU boots
#   scripts/test.sh -m 'not qemu'  any extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: run as root (the tests build network namespaces and boot VMs): in a root shell (su -) run $0;" \
       "or, where sudo is set up, sudo $0" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# The firmware matrix's arm64 case downloads (never installs) arm64 packages: the kernel,
# busybox-static and the signed shim/GRUB (bootbox.assets.demo, bootbox.assets.signedloaders). apt needs the
# architecture in its lists for that.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  apt-get update -q
fi
apt_packages=(
  python3 python3-venv python3-pip       # the project's venv
  gcc libc6-dev python3-dev              # builds bootbox.net.tftp._tftpengine (the TFTP block engine)
  ipxe ipxe-qemu qemu-system-x86 ovmf    # loaders, firmware and the emulator that PXE-boots
  dnsmasq-base                           # plays the site's own DHCP server in the e2e tests
  curl dnsutils tcpdump iproute2         # real clients (curl tftp:// and http://, dig) and the lab
  busybox-static cpio xz-utils kmod      # the demo initramfs
  nginx-light tftpd-hpa                  # reference servers for the benchmarks and the cache test
  pxelinux syslinux-common               # the ESXi BIOS path: lpxelinux.0 loads mboot.c32
  isc-dhcp-client                        # dhclient: a real client of full-DHCP mode
  mmdebstrap squashfs-tools              # Linux images: mmdebstrap the root, mksquashfs it (docs/linux-images.md)
  postgresql                             # the PostgreSQL store backend's tests start a server in a temp dir
  systemd                                # systemd-analyze verify/security on appliance/bootbox.service
  vagrant vagrant-libvirt                # `vagrant validate` of the Vagrantfile, libvirt provider included
  qemu-system-arm qemu-efi-aarch64       # the firmware matrix: arm64 `virt` + AAVMF
  shim-signed grub-efi-amd64-signed      # the Secure Boot chain: signed shim + network GRUB (x64)
  golang-go golang-github-vmware-govmomi-dev  # govmomi's vSphere simulator, built offline: the ESXi host-profile tests' peer
  prometheus                             # promtool: `promtool check metrics` on a live appliance's /metrics
  openssh-server openssh-client         # sshd on a lab host and ssh: the Ansible push's tests
  chromium chromium-driver               # headless Chromium + chromedriver: the web console's browser tests
)
# Reference servers are installed as programs only: their system services must not start (and
# take ports 69 or 80) on a developer's machine. policy-rc.d tells the packages not to start them.
services=(nginx tftpd-hpa postgresql prometheus ssh)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$guard"
    chmod 0755 "$guard"
    trap 'rm -f "$guard"' EXIT
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ -n "$guard" ]; then rm -f "$guard"; trap - EXIT; fi
  if [ -d /run/systemd/system ]; then
    systemctl disable --now "${services[@]}" >/dev/null 2>&1 || true
  fi
fi

python=python3
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "scripts/test.sh: Python 3.11 or newer is needed" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'
# The vCloud Director agent plugin ships as a separate distribution, as a third party's would.
.venv/bin/pip install -q -e plugins/bootbox_vcd
# The Ansible push plugin too (its own distribution; brings ansible-core from PyPI).
.venv/bin/pip install -q -e plugins/bootbox_ansible

# The tools are installed above, so a lab test that cannot run is a failure, not a skip.
export BOOTBOX_LAB_REQUIRED=1
# --durations: the slowest tests are listed at the end, to keep the suite under its 30 minutes.
exec .venv/bin/pytest -p no:cacheprovider --durations=30 "$@"
