"""bootbox/net/tftp"""
