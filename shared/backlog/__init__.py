"""Backlogs: a manifest of verify jobs in, one job document per job and ``summary.csv`` out.

``shared.backlog.run.run_backlog`` is the entry point; it runs the jobs on the Celery workers when
a broker is configured and in a local process pool otherwise (the embedded default).
"""
