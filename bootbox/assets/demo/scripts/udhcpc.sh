#!/bin/sh
# udhcpc event hook: configure the lease, remember the address for /init. No DNS, no routes
# unless offered: the lab's site DHCP sends an empty router option on purpose.
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
        for r in $router; do
            ip route add default via "$r" dev "$interface" && break
        done
        echo "$ip" > /run/bootbox-ip
        ;;
esac
exit 0
