"""bootbox/hooks"""
