#!/usr/bin/env bash
# Install bootbox on Debian 12 from this checkout and start it.
#
#   appliance/install.sh                install (or upgrade) and start: as a systemd service when
#                                       systemd runs, otherwise in the foreground
#   appliance/install.sh --no-start     install (or upgrade) only
#   appliance/install.sh --foreground   install (or upgrade), then run `bootbox serve` in this terminal
#   appliance/install.sh --uninstall    stop and remove the program and the unit (keeps
#                                       /etc/bootbox and /var/lib/bootbox; add --purge to drop them)
#
# Idempotent: running it again upgrades the program in place (and does nothing when this
# checkout is what is installed) and never touches an existing /etc/bootbox/bootbox.toml.
set -euo pipefail

PREFIX=/opt/bootbox
CONFIG_DIR=/etc/bootbox
STATE_DIR=/var/lib/bootbox
CACHE_DIR=/var/cache/bootbox
UNIT=/etc/systemd/system/bootbox.service
REPO="$(cd "$(dirname "$0")/.." && pwd)"

mode=install
purge=no
for arg in "$@"; do
  case "$arg" in
    --foreground) mode=foreground ;;
    --no-start) mode=no-start ;;
    --uninstall) mode=uninstall ;;
    --purge) purge=yes ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root: sudo $0 $*" >&2
  exit 1
fi

have_systemd() { [ -d /run/systemd/system ]; }

if [ "$mode" = uninstall ]; then
  if have_systemd && systemctl list-unit-files bootbox.service >/dev/null 2>&1; then
    systemctl disable --now bootbox.service >/dev/null 2>&1 || true
  fi
  rm -f "$UNIT"
  if have_systemd; then systemctl daemon-reload; fi
  rm -rf "$PREFIX" /usr/local/bin/bootbox
  if [ "$purge" = yes ]; then
    rm -rf "$CONFIG_DIR" "$STATE_DIR" /var/lib/private/bootbox "$CACHE_DIR" /var/cache/private/bootbox
  fi
  if [ "$purge" = yes ]; then echo "bootbox removed, with its configuration and state"
  else echo "bootbox removed (kept $CONFIG_DIR and $STATE_DIR; --purge removes them)"; fi
  exit 0
fi

# ipxe: the loaders served over TFTP. shim-signed, grub-efi-amd64-signed: the Secure Boot chain
# (docs/firmware.md; arm64 ones are fetched with `python -m bootbox.signedloaders`). busybox-static,
# cpio, kmod, xz-utils: the demo profile's initramfs. python3-venv: bootbox's own environment.
# iproute2: `bootbox doctor`.
packages=(python3 python3-venv python3-pip ipxe shim-signed grub-efi-amd64-signed busybox-static cpio kmod xz-utils
          ca-certificates iproute2)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# gcc, libc6-dev, python3-dev build the TFTP server's compiled block engine (bootbox/net/_tftpengine.c).
# Best effort: without them bootbox still installs, serves TFTP from Python, and `bootbox doctor` says so.
build=()
for pkg in gcc libc6-dev python3-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || build+=("$pkg")
done
if [ ${#build[@]} -gt 0 ]; then
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${build[@]}" \
    || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${build[@]}"; }; } \
    || echo "install.sh: could not install ${build[*]}: TFTP blocks will be served by Python (slower with many clients)" >&2
fi

# The program: a venv under $PREFIX, rebuilt only when this checkout differs from what is there.
stamp="$(cd "$REPO" && find pyproject.toml setup.py bootbox plugins -type f ! -name '*.pyc' -print0 | sort -z \
         | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
# Also rebuilt when the TFTP block engine is missing but a compiler is there now (bootbox doctor's advice).
engine_missing() {
  command -v gcc >/dev/null && ! "$PREFIX/bin/python" -c 'import bootbox.net.tftp._tftpengine' 2>/dev/null
}
if [ ! -x "$PREFIX/bin/bootbox" ] || [ "$(cat "$PREFIX/.installed-from" 2>/dev/null)" != "$stamp" ] || engine_missing; then
  python3 -m venv "$PREFIX"
  "$PREFIX/bin/pip" install -q --upgrade pip >/dev/null
  "$PREFIX/bin/pip" install -q "$REPO"
  echo "$stamp" > "$PREFIX/.installed-from"
  echo "installed bootbox into $PREFIX"
else
  echo "bootbox in $PREFIX is up to date"
fi
ln -sf "$PREFIX/bin/bootbox" /usr/local/bin/bootbox
install -d -m 0755 "$PREFIX/share"
install -m 0644 "$REPO/README.md" "$PREFIX/share/README.md"

install -d -m 0755 "$CONFIG_DIR"
if [ ! -f "$CONFIG_DIR/bootbox.toml" ]; then
  install -m 0644 "$REPO/appliance/bootbox.toml" "$CONFIG_DIR/bootbox.toml"
  echo "wrote $CONFIG_DIR/bootbox.toml (every key documented; edit it, then restart)"
fi
# The unit is installed even without systemd, so `systemd-analyze verify` can check it.
install -d -m 0755 "$(dirname "$UNIT")"
install -m 0644 "$REPO/appliance/bootbox.service" "$UNIT"

if [ "$mode" = no-start ]; then
  echo "bootbox installed; start it with: systemctl start bootbox (or $0 --foreground)"
  exit 0
fi

if [ "$mode" = install ] && have_systemd; then
  systemctl daemon-reload
  systemctl enable bootbox.service
  systemctl restart bootbox.service
  echo "bootbox is running as bootbox.service: journalctl -u bootbox -f; bootbox status; bootbox doctor"
  exit 0
fi

install -d -m 0700 "$STATE_DIR"
echo "starting bootbox in the foreground (Ctrl-C stops it); in another terminal: bootbox host list"
exec "$PREFIX/bin/bootbox" --config "$CONFIG_DIR/bootbox.toml" --state-dir "$STATE_DIR" serve
