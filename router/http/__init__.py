"""router/http"""
