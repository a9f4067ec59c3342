"""``deepmine train`` (EZnet, LensFlow recipes; ``train gan``), found by the app in deepmine.inference.cli.app."""
