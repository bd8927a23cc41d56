"""bootbox/assets"""
