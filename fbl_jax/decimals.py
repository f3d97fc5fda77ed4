"""Numbers printed to a fixed number of decimals, the same wherever they are printed.

The same mean reaches two tables by two float paths (a mean of fractions times 100, a mean of
percentages); they differ in the last bits, and at a tie (72.89 and 72.82 average to 72.855) '.2f'
rounded one down and the other up. Rounding the decimal value half to even after dropping
the float noise gives one answer.
"""

from __future__ import annotations

import decimal
import math


def fixed(value: float, digits: int) -> str:
    """`value` with `digits` decimals, rounded half to even on its decimal value (to 9 places)."""
    if not math.isfinite(value):
        return str(float(value))
    exact = decimal.Decimal(repr(round(float(value), 9)))
    quantum = decimal.Decimal(1).scaleb(-digits)
    text = str(exact.quantize(quantum, rounding=decimal.ROUND_HALF_EVEN))
    return "0" + text[2:] if text.startswith("-0") and not text.strip("-0.") else text


def signed(value: float, digits: int) -> str:
    """Like `fixed` with a sign always shown: +1.78, -3.07."""
    text = fixed(value, digits)
    return text if text.startswith("-") else "+" + text
