"""User-facing errors.

A ``LowresError`` is a mistake the user can fix (a bad config value, a missing file, an
unreachable hub). The CLI prints its message as one paragraph without a traceback; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LowresError(Exception):
    """An error the user can fix; the message names the thing, what was expected and the fix."""


class DataFormatError(LowresError):
    """A data file is malformed: unreadable, truncated, or with invalid rows."""


class ConfigError(LowresError):
    """A config value is out of its valid range or inconsistent with another value."""


class HubError(LowresError):
    """A model, dataset or metric could not be fetched from the Hugging Face Hub."""
