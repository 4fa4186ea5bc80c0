"""Outgoing webhooks' storage: endpoints, the outbox of events to deliver, attempts.

Domain code says what happened with `outbox.emit(session, event, data)`, in the same
transaction as the change; delivering (HTTP, signatures, retries) is
services/webhooks.py's, driven by tasks.
"""
