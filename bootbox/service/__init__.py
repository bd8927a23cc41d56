"""bootbox/service"""
