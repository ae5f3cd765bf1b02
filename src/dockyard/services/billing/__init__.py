"""Billing, one module per job (the arithmetic is in core/billing.py). Callers import
the module that owns what they use:

- prices: the price book, and what a run's mode costs per hour at a moment.
- ledger: accounts and postings (double entry), wallets, recharges, vouchers, and
  whether a balance can pay for a start.
- enforcement: notices on low balances, and stops of instances that cannot pay.
- settlement: runs from instance events; usage, storage and voucher expiry posted.
- statements: what users and admins read (balance, statement, postings, instance costs).
- verification: the ledger's invariants.

Each imports only the modules above it in this list.
"""
