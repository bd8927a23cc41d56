"""bootbox/doctor"""
