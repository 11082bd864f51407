"""Pure flight dynamics for the twin: SI units, no I/O, no asyncio.

Everything here is a plain function of numbers and numpy arrays so that it can
be unit-tested in isolation against analytic solutions and JPL ephemerides.
"""
