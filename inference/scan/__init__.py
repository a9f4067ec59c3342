"""Running a scan: the scanner, its shards and resumable work folder, the input layout.
"""
