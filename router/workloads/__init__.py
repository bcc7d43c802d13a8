"""router/workloads"""
