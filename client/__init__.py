"""Client-side operations shared by the CLI (starter.py) and any HTTP layer."""
