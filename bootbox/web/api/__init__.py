"""bootbox/web/api"""
