"""``deepmine export``, found by the app in deepmine.inference.cli.app."""
