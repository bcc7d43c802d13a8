"""router/ledger"""
