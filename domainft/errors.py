"""The base class of the failures a user is meant to read and fix (bad data, params, models).

The CLI and the DVC stage entry points print such an error as one ``error: ...`` line and exit with
status 1, without a traceback; any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations


class DomainftError(Exception):
    """An expected failure whose message names what to fix (file and line, params key, model)."""
