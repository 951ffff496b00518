"""Thin HTTP front door: validates job requests, enqueues them, serves job documents.

It loads no model and imports neither onnxruntime nor OpenCV; the heavy work happens in the
Celery workers. Run it with ``kycface api`` or ``uvicorn api_stub.app:app``.
"""
