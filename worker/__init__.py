"""The worker runtime: supervisor, processors, signals and dispatch (``perfectqueue.worker``).

Not written yet. It builds on ``perfectqueue.client`` and never imports the service.
"""
