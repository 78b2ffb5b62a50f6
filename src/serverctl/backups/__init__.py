"""Backup stores: where snapshots live (a local directory, S3), as plugins."""
