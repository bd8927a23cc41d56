"""bootbox/net/dns"""
