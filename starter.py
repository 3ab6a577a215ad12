"""The command line's entry point, as the README shows it: `python starter.py --help`.

The commands live in `cli/`; installed, the same app is the `collect` command.
"""

from cli.main import app

if __name__ == "__main__":
    app()
