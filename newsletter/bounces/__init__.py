"""Bounces and complaints: read them from mail and provider webhooks, act on them once.

- `dsn`: classify one returned email (RFC 3464, ARF, SES, plain text, auto-replies).
- `actions`: record each event once and suppress, count or unsubscribe.
- `mailbox`: Maildir, mbox, .eml folders and IMAP.
- `webhooks`: provider signature checks and payloads (SES via SNS, SendGrid, Mailgun,
  Postmark); `web`: their FastAPI router; `cli`: `newsletter bounces …`.
"""
