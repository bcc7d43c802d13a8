"""router/simulate"""
