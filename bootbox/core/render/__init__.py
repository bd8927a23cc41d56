"""bootbox/core/render"""
