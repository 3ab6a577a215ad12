"""Every side effect: SMS, email, database, tasks."""
