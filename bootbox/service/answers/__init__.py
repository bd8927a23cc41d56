"""bootbox/service/answers"""
