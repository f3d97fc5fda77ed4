"""Fixed decimals: one rounding of a number wherever it is printed."""

import math

from fbl_jax.decimals import fixed, signed
from fbl_jax.report import tables
from fbl_jax.reproduce import compare


def test_ties_round_half_to_even_on_the_decimal_value():
    # a mean of fractions lands on 72.85499999999999 ('.2f': 72.85), one of percentages on
    # 72.855 ('.2f': 72.86); both are the decimal tie 72.855, which rounds half to even to 72.86
    assert f"{(72.89 + 72.82) / 2:.2f}" == "72.85" and f"{72.855:.2f}" == "72.86"
    assert fixed((72.89 + 72.82) / 2, 2) == fixed(72.855, 2) == "72.86"
    assert fixed(72.845, 2) == "72.84" and fixed(1.25, 1) == "1.2" and fixed(1.35, 1) == "1.4"
    assert fixed(79.3849, 2) == "79.38" and fixed(5.0, 0) == "5" and fixed(-0.004, 2) == "0.00"
    assert signed(1.785, 2) == "+1.78" and signed(-3.075, 2) == "-3.08" and signed(0, 1) == "+0.0"
    assert fixed(math.nan, 2) == "nan" and fixed(math.inf, 2) == "inf"


def test_a_two_seed_mean_reads_the_same_in_both_reports():
    # seeds at 72.89 % and 72.82 %: fbl-report averages fractions, the comparison percentages
    fractions = [0.7289, 0.7282]
    report_mean = tables._mean_std(fractions)["mean"]
    percents = [100 * f for f in fractions]
    summary = {"mean": sum(percents) / 2, "std": None, "n": 2}
    assert tables._pct(report_mean) == "72.86"
    assert compare._cell(summary, 71.07) == "72.86 (+1.78)"  # 72.855 − 71.07 = 1.785: a tie
