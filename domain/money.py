"""Amounts in a currency's minor unit, as ISO 4217 defines it."""

from __future__ import annotations

import re

# ISO 4217 exponents that differ from 2; every other well-formed code has two decimals.
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}
_CODE = re.compile(r"^[A-Z]{3}$")


class InvalidCurrency(ValueError):
    """A currency code that is not three letters."""


def normalize_currency(code: str) -> str:
    """Return the ISO 4217 code in upper case (providers such as Stripe send `usd`)."""
    upper = code.strip().upper()
    # ASCII first: str.upper() turns some other letters into ASCII ones (long s -> "S").
    if not code.isascii() or not _CODE.match(upper):
        raise InvalidCurrency(f"not an ISO 4217 currency code: {code!r}")
    return upper


def exponent(currency: str) -> int:
    """Number of decimals of the currency's minor unit (JPY 0, EUR 2, KWD 3)."""
    return _EXPONENTS.get(normalize_currency(currency), 2)
