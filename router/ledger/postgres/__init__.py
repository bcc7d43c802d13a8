"""router/ledger/postgres"""
