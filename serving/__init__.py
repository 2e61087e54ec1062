"""The Label Studio ML backend: a FastAPI app serving the activelearn classifier.

Run it with `uvicorn serving.app:app --host 127.0.0.1 --port 9090` or `python -m serving`.
"""
