"""Deterministic collection workflows and the policy they follow.

Nothing here does I/O: no database driver, HTTP client, provider SDK or configuration.
"""
