"""Opens and clicks, privacy first: tracked links and the open pixel, their events
labelled human or machine (never dropped), and the counts they roll up into.

    models ← policy, tokens, classify ← links, events ← engagement, retention

Modes (per list, per campaign, per reader: see policy.py): `off`, `anonymous` (the
default: counts only, no event can be tied to a person) and `individual` (per-recipient
events, for lists whose readers agreed).
"""
