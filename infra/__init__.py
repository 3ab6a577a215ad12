"""The local stack: embedded Temporal and PostgreSQL, the provider emulator, migrations, codecs.

Knows no case logic.
"""
