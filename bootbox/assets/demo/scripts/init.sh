#!/bin/sh
# bootbox demo payload. As PID 1: find the boot NIC, get an address, report in, power off.
# When sourced by another shell (the tests do) it only defines its functions.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

# bootbox_parse_cmdline "ARGS": sets BB_MAC (lowercase, colons) and BB_CALLBACK.
# bootbox.mac= wins over BOOTIF= (pxelinux style "01-aa-bb-cc-dd-ee-ff").
bootbox_parse_cmdline() {
    BB_MAC=""
    BB_CALLBACK=""
    _bb_bootif=""
    _bb_mac=""
    set -f  # a URL with ? or * must not be globbed
    for _bb_arg in $1; do
        case "$_bb_arg" in
            BOOTIF=*) _bb_bootif="${_bb_arg#BOOTIF=}" ;;
            bootbox.mac=*) _bb_mac="${_bb_arg#bootbox.mac=}" ;;
            bootbox.callback=*) BB_CALLBACK="${_bb_arg#bootbox.callback=}" ;;
        esac
    done
    set +f
    if [ ${#_bb_bootif} -eq 20 ]; then
        _bb_bootif="${_bb_bootif#??-}"  # drop the ARP hardware type
    fi
    BB_MAC="${_bb_mac:-$_bb_bootif}"
    BB_MAC=$(echo "$BB_MAC" | tr 'A-F-' 'a-f:')
}

# bootbox_find_iface MAC: the interface with that MAC, else the first that is not lo.
bootbox_find_iface() {
    for _bb_dev in /sys/class/net/*; do
        [ -e "$_bb_dev/address" ] || continue
        if [ -n "$1" ] && [ "$(cat "$_bb_dev/address")" = "$1" ]; then
            echo "${_bb_dev##*/}"
            return 0
        fi
    done
    [ -z "$1" ] || return 1
    for _bb_dev in /sys/class/net/*; do
        [ "${_bb_dev##*/}" = lo ] && continue
        [ -e "$_bb_dev/address" ] || continue
        echo "${_bb_dev##*/}"
        return 0
    done
    return 1
}

bootbox_main() {
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev 2>/dev/null
    echo "@MARKER_START@ kernel $(uname -r)"
    while read -r _bb_mod; do
        insmod "/lib/modules/$(uname -r)/$_bb_mod" 2>/dev/null
    done < /etc/bootbox-demo/modules
    bootbox_parse_cmdline "$(cat /proc/cmdline)"
    ip link set lo up
    IFACE=""
    _bb_try=0
    while [ $_bb_try -lt 50 ]; do
        IFACE=$(bootbox_find_iface "$BB_MAC") && break
        _bb_try=$((_bb_try + 1))
        sleep 0.2
    done
    if [ -z "$IFACE" ]; then
        echo "@MARKER_FAIL@: no network interface${BB_MAC:+ with MAC $BB_MAC}"
        bootbox_poweroff
    fi
    MAC=$(cat "/sys/class/net/$IFACE/address")
    ip link set "$IFACE" up
    rm -f /run/bootbox-ip
    udhcpc -f -q -n -t 10 -T 2 -i "$IFACE" -s /etc/udhcpc.script >/dev/null 2>&1
    IP=$(cat /run/bootbox-ip 2>/dev/null)
    if [ -z "$IP" ]; then
        echo "@MARKER_FAIL@: no DHCP lease on $IFACE mac=$MAC"
        bootbox_poweroff
    fi
    echo "BOOTBOX-DEMO: $IFACE mac=$MAC ip=$IP"
    if [ -z "$BB_CALLBACK" ]; then
        echo "@MARKER_FAIL@: no bootbox.callback= on the kernel command line"
        bootbox_poweroff
    fi
    BOOT_ID=$(cat /proc/sys/kernel/random/uuid)
    SECURE_BOOT=$(bootbox_secure_boot)
    BODY="mac=$MAC&ip=$IP&boot_id=$BOOT_ID&kernel=$(uname -r)&secure_boot=$SECURE_BOOT"
    # Six tries, two seconds apart: a callback URL on IPv6 needs the address the kernel
    # configures by itself from the router advertisement (a few seconds after link-up).
    for _bb_attempt in 1 2 3 4 5 6; do
        # busybox 1.35's wget -T segfaults, so timeout(1) bounds each attempt instead.
        if timeout 10 wget -q -O /run/callback.out --post-data "$BODY" "$BB_CALLBACK"; then
            echo "@MARKER_OK@ mac=$MAC ip=$IP boot_id=$BOOT_ID"
            bootbox_poweroff
        fi
        sleep 2
    done
    echo "@MARKER_FAIL@: POST to $BB_CALLBACK failed mac=$MAC ip=$IP"
    bootbox_poweroff
}

# bootbox_secure_boot: "on" or "off" as the firmware's SecureBoot variable says (its fifth byte,
# after four attribute bytes), "off" without EFI, "unknown" when the variable cannot be read.
bootbox_secure_boot() {
    [ -d /sys/firmware/efi ] || { echo off; return; }
    mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
    for _bb_var in /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c; do
        [ -e "$_bb_var" ] || break
        case "$(dd if="$_bb_var" bs=1 skip=4 count=1 2>/dev/null | od -An -tu1 | tr -d ' ')" in
            1) echo on; return ;;
            0) echo off; return ;;
        esac
    done
    echo unknown
}

bootbox_poweroff() {
    poweroff -f
    echo o > /proc/sysrq-trigger
    sleep 5
    exit 1
}

if [ "$$" = 1 ]; then
    bootbox_main
fi
