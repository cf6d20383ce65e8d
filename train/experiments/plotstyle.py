"""Axis labels people can read: integer steps and ranks, plain numbers on log axes, no offsets."""

from __future__ import annotations


def tidy(ax, *, integer_x: bool = False) -> None:
    """No `1e-5+1.595` offset labels, no `1.66x10^0` minor labels on log axes, integer ticks on
    step/rank axes."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "log":
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(NullFormatter())
        else:
            fmt = axis.get_major_formatter()
            if hasattr(fmt, "set_useOffset"):
                fmt.set_useOffset(False)
            if hasattr(fmt, "set_scientific"):
                fmt.set_scientific(False)
    if integer_x:
        if ax.get_xscale() == "log":
            from matplotlib.ticker import FixedLocator

            lines = [x for line in ax.get_lines() for x in line.get_xdata()]
            if lines:
                ax.xaxis.set_major_locator(FixedLocator(sorted({float(x) for x in lines})))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
