"""``python -m deepmine.inference.cli`` — same as the ``deepmine`` command."""
from .app import run

run()
