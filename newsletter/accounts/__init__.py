"""Staff accounts: users and their roles, sessions, API tokens, and the audit log.

Every staff face (the CLI, `/api/v1`, the console) acts as an `Actor`; the service
functions record what it did in the append-only audit log (audit.py).
"""
