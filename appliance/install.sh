#!/usr/bin/env bash
# Install bootbox on Debian 12 from this checkout and start it.
#
#   appliance/install.sh                install (or upgrade) and start: as a systemd service when
#                                       systemd runs, otherwise in the foreground
#   appliance/install.sh --foreground   install, then run `bootbox serve` in this terminal
#   appliance/install.sh --uninstall    stop and remove the program and the unit (keeps
#                                       /etc/bootbox and /var/lib/bootbox; add --purge to drop them)
#
# Idempotent: running it again upgrades the program in place and keeps config and state.
set -euo pipefail

PREFIX=/opt/bootbox
CONFIG_DIR=/etc/bootbox
STATE_DIR=/var/lib/bootbox
UNIT=/etc/systemd/system/bootbox.service
REPO="$(cd "$(dirname "$0")/.." && pwd)"

mode=install
purge=no
for arg in "$@"; do
  case "$arg" in
    --foreground) mode=foreground ;;
    --uninstall) mode=uninstall ;;
    --purge) purge=yes ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root: sudo $0 $*" >&2
  exit 1
fi

have_systemd() { [ -d /run/systemd/system ]; }

if [ "$mode" = uninstall ]; then
  if have_systemd && [ -f "$UNIT" ]; then
    systemctl disable --now bootbox.service || true
    rm -f "$UNIT"
    systemctl daemon-reload
  fi
  rm -rf "$PREFIX" /usr/local/bin/bootbox
  if [ "$purge" = yes ]; then rm -rf "$CONFIG_DIR" "$STATE_DIR" /var/lib/private/bootbox; fi
  echo "bootbox removed${purge/no/ (config and state kept)}"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# ipxe: the loaders served over TFTP. busybox-static, cpio, kmod, xz-utils: the demo profile's
# initramfs. python3-venv: bootbox's own environment.
apt-get update -q
apt-get install -y -q --no-install-recommends \
  python3 python3-venv python3-pip ipxe busybox-static cpio kmod xz-utils ca-certificates

python3 -m venv "$PREFIX"
"$PREFIX/bin/pip" install -q --upgrade pip >/dev/null
"$PREFIX/bin/pip" install -q "$REPO"
ln -sf "$PREFIX/bin/bootbox" /usr/local/bin/bootbox
install -d -m 0755 "$PREFIX/share"
install -m 0644 "$REPO/README.md" "$PREFIX/share/README.md"

install -d -m 0755 "$CONFIG_DIR"
if [ ! -f "$CONFIG_DIR/bootbox.toml" ]; then
  install -m 0644 "$REPO/appliance/bootbox.toml" "$CONFIG_DIR/bootbox.toml"
fi

if [ "$mode" = install ] && have_systemd; then
  install -m 0644 "$REPO/appliance/bootbox.service" "$UNIT"
  systemctl daemon-reload
  systemctl enable bootbox.service
  systemctl restart bootbox.service
  echo "bootbox is running as bootbox.service: journalctl -u bootbox -f; bootbox status"
  exit 0
fi

install -d -m 0700 "$STATE_DIR"
echo "starting bootbox in the foreground (Ctrl-C stops it); in another terminal: bootbox host list"
exec "$PREFIX/bin/bootbox" --config "$CONFIG_DIR/bootbox.toml" --state-dir "$STATE_DIR" serve
