"""The selection function: grid, cells, reference pool, the measurement (local, resumable,
distributed), the result table and its corner plot, and painted (``--onto``) variants.
"""
