"""One line, password hidden, for a database or broker a command cannot reach."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from kombu.exceptions import OperationalError as BrokerUnreachable
from sqlalchemy.exc import InterfaceError
from sqlalchemy.exc import OperationalError as DatabaseUnreachable

from worker.settings import Settings

FAILURES = (DatabaseUnreachable, InterfaceError, BrokerUnreachable)


def explain(error: BaseException, settings: Settings) -> str:
    """What failed and where, on one line: `error` is one of FAILURES."""
    if isinstance(error, BrokerUnreachable):
        where, what = "broker", shown(settings.broker)
        cause = str(error)
    else:
        where, what = "database", shown(settings.database)
        orig = getattr(error, "orig", None)
        cause = str(orig if orig is not None else error)
    first = " ".join(cause.split("\n")[0].split()) or type(error).__name__
    return (
        f"payhook: the {where} at {what} is unreachable or unusable: {first} "
        f"(check PAYHOOK_{'BROKER' if where == 'broker' else 'DATABASE'}_URL, and that it runs)"
    )


def shown(url: str) -> str:
    """`url` with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
