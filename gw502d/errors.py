"""Errors every layer may raise about its configuration, so a caller catches one type."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names where, the key and why."""

    def __init__(self, key: str, problem: str, source: str = "") -> None:
        super().__init__(f"{source}: {key}: {problem}" if source else f"{key}: {problem}")
        self.key = key
        self.problem = problem
