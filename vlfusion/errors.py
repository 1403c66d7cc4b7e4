"""Errors shared across the package, in a module that imports nothing of it (so none import each other)."""


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field."""
