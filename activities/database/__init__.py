"""PostgreSQL: case records, contact decisions and the caps' reservation, agent tasks."""
