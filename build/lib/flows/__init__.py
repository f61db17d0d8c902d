"""Prefect flows and the `csdm` command line."""
