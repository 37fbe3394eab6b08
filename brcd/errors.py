"""User-facing errors: each message names the problem and how to fix it."""


class BrcdError(Exception):
    """An error caused by input (config, data, files) rather than a bug.

    The CLI prints these as one clean line and exits with status 2.
    """


class ConfigError(BrcdError):
    """A config value is missing, unknown or out of range."""


class DataError(BrcdError):
    """Dataset files are missing or malformed."""


class MetadataMismatchError(BrcdError):
    """An input file was produced for a different cell than the one requested."""
