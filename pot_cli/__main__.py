"""``python -m pot_cli`` runs the ``pot`` command."""
from pot_cli.cli import main

if __name__ == "__main__":
    main()
