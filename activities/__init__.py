"""Every side effect, grouped by the outside system: `channels/` (the message providers, one adapter
each, and the outbox), `database/` (PostgreSQL: records, contacts, tasks), `policies.py` (the
policy files), `templates.py` (the borrower messages); `wiring.py` builds a worker's list."""
