"""bootbox/runtime"""
