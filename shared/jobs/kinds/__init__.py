"""The job kinds. Every module here is imported by :data:`shared.jobs.registry.REGISTRY` on first
use, and declares its kinds with :func:`shared.jobs.registry.job_kind`."""
