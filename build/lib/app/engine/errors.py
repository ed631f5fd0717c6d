"""Errors the engine raises for the API to answer with a status code."""

from __future__ import annotations


class EngineError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(EngineError):
    status_code = 404


class Conflict(EngineError):
    status_code = 409


class Invalid(EngineError):
    status_code = 422


class TooLarge(EngineError):
    status_code = 413
