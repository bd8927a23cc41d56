"""bootbox/net/dhcp6"""
