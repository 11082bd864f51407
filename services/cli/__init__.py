"""`twin`, the command line of the twin: up, run, status, clock (see app.py)."""
