"""The Python SDK over the HTTP service (``perfectqueue.client``).

Not written yet: the service's HTTP API (see ``openapi/openapi.json``) is what it will wrap.
It must never import the service, FastAPI, SQLAlchemy or a database driver.
"""
