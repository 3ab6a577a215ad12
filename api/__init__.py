"""The HTTP API: a thin surface over `service/` for loan systems, agents and operators.

It holds no case rules of its own: every request is checked by the service's input functions and
answered by the service's operations; this package adds only what HTTP needs (keys and roles,
idempotency, the audit trail, problem details).
"""
