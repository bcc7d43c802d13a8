"""router/core"""
