"""router/ledger/sqlite"""
