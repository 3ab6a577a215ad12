"""The strategy lab (issue 21): backtests of a book on the real case logic, without a server."""
