"""``deepmine craft``, ``deepmine selection`` and ``deepmine demo`` (found by the app in deepmine.inference.cli.app)."""
