"""The grading page: the session, its HTTP server, cutouts served by catalogue identity, grades
and their export.
"""
