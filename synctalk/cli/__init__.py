"""Command-line interface. Every module in this package that defines `register(subparsers)` adds one
subcommand; `main.py` finds them. Command modules import heavy libraries inside their handlers only."""
