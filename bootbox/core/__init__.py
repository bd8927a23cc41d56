"""bootbox/core"""
