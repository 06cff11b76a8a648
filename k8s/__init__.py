"""Cluster operations over the `kubernetes` client: apply, status, logs, list, delete, run, preflight."""
