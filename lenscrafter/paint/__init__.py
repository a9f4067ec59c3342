"""LensCrafter arcs painted onto real galaxy cutouts: the painting, the galaxy-light measurement,
and ``deepmine craft --onto`` over files or survey images.
"""
