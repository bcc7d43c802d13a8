"""router/ops"""
