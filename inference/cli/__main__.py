"""``python -m deepmine.inference.cli`` — same as the ``deepmine`` command."""
from .app import run

if __name__ == "__main__":
    run()
