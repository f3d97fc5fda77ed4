"""The package's shared error types, in a module that imports nothing of the package.

`ConfigError` is raised both by the config checks (fbl_jax/defaults.py) and by the code the
config names (the losses, the training set-up …); here, neither side has to import the other for
it, so no import circle runs through it. `fbl_jax.defaults.ConfigError` is the same class.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config field is unknown or impossible; the message names the field and the fix."""


class DataError(ValueError):
    """The data does not fit the config or cannot be read (a class count, an image, a list
    file, a weights file for another model); the message names the file or the field and the
    fix."""
