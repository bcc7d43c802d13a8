"""router/workloads/fine_tuning"""
