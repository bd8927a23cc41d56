#!/usr/bin/env bash
# Install bootbox on Debian 12 from this checkout, start it, and return once it answers.
#
#   appliance/install.sh                install (or upgrade) and start: as bootbox.service when
#                                       systemd runs, otherwise in the background (its log in
#                                       /var/log/bootbox.log, its pid in /run/bootbox.pid)
#   appliance/install.sh --stop         stop it, however it was started
#   appliance/install.sh --no-start     install (or upgrade) only
#   appliance/install.sh --foreground   install (or upgrade), then run `bootbox serve` in this terminal
#   appliance/install.sh --uninstall    stop and remove the program and the unit (keeps
#                                       /etc/bootbox and /var/lib/bootbox; add --purge to drop them)
#   --root DIR                          with any of the above: every file under DIR instead of /
#                                       (DIR/opt/bootbox, DIR/etc/bootbox, DIR/run/bootbox.pid, ...),
#                                       never through systemd. Debian packages stay the machine's.
#                                       The tests install this way beside an operator's bootbox.
#
# Run it as root: from a root shell as written, or with sudo. Idempotent: running it again
# upgrades the program in place (and rebuilds nothing when this checkout is what is installed),
# restarts bootbox, and never touches an existing /etc/bootbox/bootbox.toml.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
START_TIMEOUT=300  # seconds; the first start downloads Debian's kernel package for the demo profile
STOP_TIMEOUT=30

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

mode=install
purge=no
root_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --foreground) mode=foreground ;;
    --no-start) mode=no-start ;;
    --stop) mode=stop ;;
    --uninstall) mode=uninstall ;;
    --purge) purge=yes ;;
    --root) [ $# -ge 2 ] || { echo "install.sh: --root needs a directory" >&2; exit 2; }
            root_dir="$2"; shift ;;
    --root=*) root_dir="${1#--root=}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ -n "$root_dir" ]; then
  # Absolute and plain, because it goes into the venv's scripts and the unit's paths.
  root_dir="$(realpath -m -- "$root_dir")"
  if [[ ! "$root_dir" =~ ^/[A-Za-z0-9._/+-]*$ ]]; then
    echo "install.sh: --root $root_dir: use a path of letters, digits and ._+-/ only" >&2
    exit 2
  fi
  [ "$root_dir" != / ] || root_dir=""
fi
PREFIX="$root_dir/opt/bootbox"
CONFIG_DIR="$root_dir/etc/bootbox"
STATE_DIR="$root_dir/var/lib/bootbox"
CACHE_DIR="$root_dir/var/cache/bootbox"
UNIT="$root_dir/etc/systemd/system/bootbox.service"
BIN_LINK="$root_dir/usr/local/bin/bootbox"
LOG="$root_dir/var/log/bootbox.log"
PIDFILE="$root_dir/run/bootbox.pid"
LOADERS="$STATE_DIR/loaders/arm64"
SELF="$0${root_dir:+ --root $root_dir}"  # how to call this script again, for the messages

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run it as root: in a root shell (su -) run $0 $*; or, where sudo is set up, sudo $0 $*" >&2
  exit 1
fi

# systemd manages the machine's own files only, never a --root tree.
have_systemd() { [ -z "$root_dir" ] && [ -d /run/systemd/system ]; }
unit_known() { have_systemd && systemctl cat bootbox.service >/dev/null 2>&1; }

# bootbox runs from its config file, as under systemd: BOOTBOX_* settings of this shell (and
# BOOTBOX_URL, BOOTBOX_TOKEN for the status check) do not leak into it.
clean_env=(env)
for name in "${!BOOTBOX_@}"; do clean_env+=(-u "$name"); done
bootbox_cli() { "${clean_env[@]}" "$PREFIX/bin/bootbox" --config "$CONFIG_DIR/bootbox.toml" --state-dir "$STATE_DIR" "$@"; }

# The pid in $PIDFILE, if that process is the bootbox this script started from $PREFIX (a pid
# file left by a crash may name a process that reused the number).
background_pid() {
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$PREFIX/bin/bootbox --config $CONFIG_DIR/bootbox.toml" || return 1
  echo "$pid"
}

# Stop bootbox wherever it runs: the unit, and a background process this script started.
stop_bootbox() {
  local pid waited=0 said=no
  if unit_known && systemctl is-active --quiet bootbox.service; then
    systemctl stop bootbox.service
    echo "stopped bootbox.service"
    said=yes
  fi
  if pid="$(background_pid)"; then
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt $((STOP_TIMEOUT * 10)) ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      echo "bootbox (pid $pid) did not stop within ${STOP_TIMEOUT}s of SIGTERM: killed it (see $LOG)" >&2
    else
      echo "stopped bootbox (pid $pid)"
    fi
    said=yes
  fi
  rm -f "$PIDFILE"
  if [ "$said" = no ]; then echo "bootbox is not running"; fi
}

if [ "$mode" = stop ]; then
  stop_bootbox
  exit 0
fi

if [ "$mode" = uninstall ]; then
  stop_bootbox >/dev/null
  if unit_known; then systemctl disable bootbox.service >/dev/null 2>&1 || true; fi
  rm -f "$UNIT"
  if have_systemd; then systemctl daemon-reload; fi
  rm -rf "$PREFIX" "$BIN_LINK"
  if [ "$purge" = yes ]; then
    rm -rf "$CONFIG_DIR" "$STATE_DIR" "$root_dir/var/lib/private/bootbox" "$CACHE_DIR" \
      "$root_dir/var/cache/private/bootbox" "$LOG"
    echo "bootbox removed, with its configuration, state and log"
  else
    echo "bootbox removed (kept $CONFIG_DIR, $STATE_DIR and $LOG; --purge removes them)"
  fi
  exit 0
fi

# ipxe: the loaders served over TFTP. shim-signed, grub-efi-amd64-signed: the Secure Boot chain
# (docs/firmware.md; the arm64 ones are fetched below). busybox-static, cpio, kmod, xz-utils: the
# demo profile's initramfs. python3-venv: bootbox's own environment. iproute2: `bootbox doctor`.
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
# gcc, libc6-dev, python3-dev build the TFTP server's compiled block engine (bootbox/net/tftp/_tftpengine.c).
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
# python -I, here and below: the installed bootbox, never the checkout in the current directory.
engine_missing() {
  command -v gcc >/dev/null && ! "$PREFIX/bin/python" -I -c 'import bootbox.net.tftp._tftpengine' 2>/dev/null
}
if [ ! -x "$PREFIX/bin/bootbox" ] || [ "$(cat "$PREFIX/.installed-from" 2>/dev/null)" != "$stamp" ] || engine_missing; then
  install -d -m 0755 "$(dirname "$PREFIX")"
  python3 -m venv "$PREFIX"
  "$PREFIX/bin/pip" install -q --upgrade pip >/dev/null
  "$PREFIX/bin/pip" install -q "$REPO"
  echo "$stamp" > "$PREFIX/.installed-from"
  echo "installed bootbox into $PREFIX"
else
  echo "bootbox in $PREFIX is up to date"
fi
install -d -m 0755 "$(dirname "$BIN_LINK")"
ln -sfn "$PREFIX/bin/bootbox" "$BIN_LINK"
install -d -m 0755 "$PREFIX/share"
install -m 0644 "$REPO/README.md" "$PREFIX/share/README.md"

install -d -m 0755 "$CONFIG_DIR"
if [ ! -f "$CONFIG_DIR/bootbox.toml" ]; then
  install -m 0644 "$REPO/appliance/bootbox.toml" "$CONFIG_DIR/bootbox.toml"
  echo "wrote $CONFIG_DIR/bootbox.toml (every key documented; edit it, then run $SELF again)"
fi
# The unit is installed even without systemd, so `systemd-analyze verify` can check it; under
# --root its paths are the root's, so that check looks at this installation's program.
install -d -m 0755 "$(dirname "$UNIT")"
sed -e "s#/opt/bootbox#$PREFIX#g" -e "s#/etc/bootbox#$CONFIG_DIR#g" -e "s#/var/lib/bootbox#$STATE_DIR#g" \
    -e "s#/var/cache/bootbox#$CACHE_DIR#g" "$REPO/appliance/bootbox.service" >"$UNIT.tmp"
chmod 0644 "$UNIT.tmp"
mv -f "$UNIT.tmp" "$UNIT"

# Debian's signed ARM64 loaders (shim, network GRUB) for ARM64 clients, where [dhcp.loader_files]
# expects them. They cannot be installed beside an amd64 system's GRUB, so the packages are only
# downloaded and unpacked (bootbox.assets.signedloaders); apt needs arm64 in its lists for that.
# Best effort: offline, bootbox runs without them and says so, and this says how to fetch them later.
fetch_arm64_loaders() {
  local later="dpkg --add-architecture arm64 && apt-get update && $PREFIX/bin/python -m bootbox.assets.signedloaders arm64 $LOADERS (or run $SELF again)"
  if [ -f "$LOADERS/shimaa64.efi.signed" ] && [ -f "$LOADERS/grubnetaa64.efi.signed" ]; then
    return 0
  fi
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    timeout 300 apt-get update -q >/dev/null 2>&1 || true
  fi
  install -d -m 0700 "$STATE_DIR"
  local fetch=(timeout 300 "$PREFIX/bin/python" -I -m bootbox.assets.signedloaders arm64 "$LOADERS")
  local err
  if err="$("${fetch[@]}" 2>&1 >/dev/null)" \
     || { timeout 300 apt-get update -q >/dev/null 2>&1 && err="$("${fetch[@]}" 2>&1 >/dev/null)"; }; then
    echo "fetched Debian's signed ARM64 loaders into $LOADERS"
  else
    echo "install.sh: could not fetch Debian's signed ARM64 loaders (offline?): ARM64 clients get no loader until then." >&2
    err="${err##*$'\n'}"
    echo "  ${err:-no answer within 300s}" >&2
    echo "  Later: $later" >&2
  fi
}
fetch_arm64_loaders

if [ "$mode" = no-start ]; then
  if have_systemd; then echo "bootbox installed; start it with: systemctl start bootbox (or $SELF)"
  else echo "bootbox installed; start it with: $SELF"; fi
  exit 0
fi

# One bootbox at a time: the one started before (unit or background) goes first, and anything
# else already answering on bootbox's HTTP port is another program this must not race with.
stop_bootbox >/dev/null
base=""
if ! base="$("${clean_env[@]}" "$PREFIX/bin/python" -I - "$CONFIG_DIR/bootbox.toml" <<'EOF' 2>/dev/null
import sys
from pathlib import Path

from bootbox.config import load_settings

http = load_settings(Path(sys.argv[1])).http
host = "127.0.0.1" if http.bind_address in ("", "0.0.0.0", "::") else http.bind_address
print(f"http://[{host}]:{http.port}" if ":" in host else f"http://{host}:{http.port}")
EOF
)"; then
  base=""  # an invalid config: `bootbox serve` below says what is wrong with it
fi
# Bounded: a program that accepts connections on the port but never answers must not stall this.
answers() { timeout 10 "${clean_env[@]}" "$PREFIX/bin/bootbox" --config "$CONFIG_DIR/bootbox.toml" --state-dir "$STATE_DIR" \
              ${base:+--url "$base"} status >/dev/null 2>&1; }
if [ -n "$base" ] && answers; then
  echo "install.sh: something already answers at $base (another bootbox?): stop it, then run $SELF again" >&2
  exit 1
fi

if [ "$mode" = foreground ]; then
  install -d -m 0700 "$STATE_DIR"
  install -d -m 0755 "$CACHE_DIR"
  echo "starting bootbox in the foreground (Ctrl-C stops it); in another terminal: bootbox host list"
  exec "${clean_env[@]}" BOOTBOX_CACHE="$CACHE_DIR" "$PREFIX/bin/bootbox" --config "$CONFIG_DIR/bootbox.toml" \
    --state-dir "$STATE_DIR" serve
fi

started=$SECONDS
if have_systemd; then
  systemctl daemon-reload
  systemctl enable --quiet bootbox.service
  # A unit that gave up before (StartLimitBurst) would refuse to start again after the fix.
  systemctl reset-failed bootbox.service 2>/dev/null || true
  systemctl start bootbox.service
  # Restarting after a failure is "activating"; given up (StartLimitBurst) is "failed".
  alive() { case "$(systemctl show -p ActiveState --value bootbox.service)" in active|activating|reloading) ;; *) false ;; esac; }
  last_lines() { journalctl -u bootbox.service -n 20 --no-pager -q 2>/dev/null || true; }
  how="as bootbox.service (it starts at boot)"
  logs="journalctl -u bootbox -f"
  stop="systemctl stop bootbox (or $SELF --stop)"
else
  install -d -m 0700 "$STATE_DIR"
  install -d -m 0755 "$CACHE_DIR" "$(dirname "$LOG")" "$(dirname "$PIDFILE")"
  touch "$LOG"
  chmod 0640 "$LOG"
  offset=$(stat -c %s "$LOG")
  # setsid: its own session, so closing this terminal or Ctrl-C in it does not stop bootbox.
  # sh writes its own pid (which exec keeps) to the pid file, whether or not setsid forked.
  # shellcheck disable=SC2016
  "${clean_env[@]}" BOOTBOX_CACHE="$CACHE_DIR" setsid sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$PIDFILE" \
    "$PREFIX/bin/bootbox" --config "$CONFIG_DIR/bootbox.toml" --state-dir "$STATE_DIR" serve \
    </dev/null >>"$LOG" 2>&1 &
  for _ in $(seq 50); do background_pid >/dev/null && break; sleep 0.1; done
  pid="$(background_pid)" || pid=""
  alive() { [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
  last_lines() { tail -c +$((offset + 1)) "$LOG" | tail -n 20; }
  how="in the background (systemd is not running here, so it does not start again at boot), pid ${pid:-?}"
  logs="tail -f $LOG"
  stop="$SELF --stop"
fi

until answers; do
  if ! alive; then
    echo "install.sh: bootbox exited while starting; the last lines of its log:" >&2
    last_lines >&2
    exit 1
  fi
  if [ $((SECONDS - started)) -ge "$START_TIMEOUT" ]; then
    echo "install.sh: bootbox did not answer at ${base:-its HTTP port} within ${START_TIMEOUT}s (it may still be" \
         "downloading the demo kernel: $logs); the last lines of its log:" >&2
    last_lines >&2
    echo "stop it with: $stop" >&2
    exit 1
  fi
  sleep 1
done

echo "bootbox is up after $((SECONDS - started))s, $how"
bootbox_cli ${base:+--url "$base"} status | sed 's/^/  /' || true
echo "  log:  $logs"
echo "  stop: $stop"
echo "  next: bootbox host list; bootbox doctor; PXE-boot a machine on this network (it boots the demo profile)"
