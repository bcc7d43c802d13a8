"""router/status"""
