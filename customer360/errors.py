"""Errors a user can act on: the CLI prints them as one sentence and exits non-zero."""


class UserFacingError(Exception):
    """An expected failure whose message tells the user what to fix."""


class BatchInProgressError(UserFacingError):
    """Another batch is loading; this one can start once it has ended (the DAG retries it)."""


class DeliveryMissingError(UserFacingError):
    """The landing folder of a run's date does not exist (yet); the DAG waits for a late
    delivery by retrying."""


def first_line(error: BaseException, fallback: str) -> str:
    """The first line of an error's message (psycopg2's run over several), or ``fallback``
    when it has none."""
    return (str(error).strip().splitlines() or [fallback])[0]
