"""Errors a user can act on: the CLI prints them as one sentence and exits non-zero."""


class UserFacingError(Exception):
    """An expected failure whose message tells the user what to fix."""
