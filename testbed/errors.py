"""Errors shown to users: each one says where (file, line or key) and what is allowed."""

from __future__ import annotations


class TestbedError(Exception):
    """Base class for errors the CLI prints as one clean line (no traceback)."""


class ConfigError(TestbedError):
    """A YAML config, topology or experiment file is invalid.

    ``where`` is ``file`` or ``file: key.path``; the message says what is allowed.
    """

    def __init__(self, where: str, message: str):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}")


class CapabilityError(TestbedError):
    """The kernel or machine cannot emulate what was asked (e.g. delay without sch_netem)."""
