"""Background processes: the worker (claims due work) and the scheduler (periodic duties)."""
