"""The ``deepmine`` command line (typer + rich). Entry point: :func:`deepmine.inference.cli.app.main`."""
