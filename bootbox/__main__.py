"""``python -m bootbox`` runs the CLI."""

from bootbox.cli import main

main()
