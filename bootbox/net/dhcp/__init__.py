"""bootbox/net/dhcp"""
