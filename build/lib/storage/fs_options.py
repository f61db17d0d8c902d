"""Non-secret fsspec options from the command line, shared by every `Root` of a process."""

from __future__ import annotations

import json
import os

# Options that carry secrets: refused on the command line and never printed.
SECRET_OPTIONS = frozenset(
    {
        "key",
        "secret",
        "token",
        "password",
        "session_token",
        "aws_secret_access_key",
        "aws_session_token",
        "account_key",
        "sas_token",
        "client_secret",
        "credentials",
    }
)


# Non-secret options every Root made without its own takes (set by the CLI's
# --storage-option, inherited by local Dask workers and DataLoader workers).
OPTIONS_ENV = "CSDM_STORAGE_OPTIONS"


def parse_options(pairs: list[str] | tuple[str, ...]) -> dict:
    """`KEY=VALUE` strings to a dict; secret keys are refused (they belong in the environment)."""
    opts = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option {pair!r}: expected KEY=VALUE")
        if key.lower() in SECRET_OPTIONS:
            raise ValueError(
                f"--storage-option {key}: secrets are not taken on the command line (shell "
                "history, Prefect run parameters); set the cloud's environment variable, "
                "e.g. AWS_SECRET_ACCESS_KEY, instead"
            )
        opts[key] = {"true": True, "false": False}.get(value.lower(), value)
    return opts


def use_options(pairs: list[str] | tuple[str, ...]) -> dict:
    """Parse `--storage-option` pairs and make them the default of every Root in this process."""
    opts = parse_options(pairs)
    if opts:
        os.environ[OPTIONS_ENV] = json.dumps(opts)
    return opts
