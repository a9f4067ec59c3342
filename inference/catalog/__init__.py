"""Candidate catalogues: writing and reading them (FITS, ECSV, Parquet, Parquet datasets, HATS) and
the merge of a scan's part files, in memory or streamed.
"""
