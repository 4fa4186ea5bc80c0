"""The staff console at /admin: server-rendered pages for marketing staff.

Every page is plain HTML that works without JavaScript; the vendored htmx (static/,
pinned, no CDN) only makes parts of it live (the preview as you type, progress as it
sends). Routes are thin: they check the viewer's role, call the same service
functions as the CLI and the API, and render a template. See app.py for the headers
(a strict Content-Security-Policy without inline script), common.py for sessions,
CSRF tokens and role checks.
"""
