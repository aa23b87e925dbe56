"""The error a user's configuration raises; apart so that `config.py` and `presets.py` both raise it without a cycle."""


class ConfigError(ValueError):
    """A user's configuration is wrong; the message names the key and what to do."""
