"""The command line: typer commands over `service/`, grouped by who uses them."""
