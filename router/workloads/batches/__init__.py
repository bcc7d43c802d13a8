"""router/workloads/batches"""
