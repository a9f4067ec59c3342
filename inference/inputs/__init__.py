"""Reading what is scanned: cutout stacks and files, survey images around catalogued sources or
in tiles, mask/variance planes, the source catalogue's columns.
"""
