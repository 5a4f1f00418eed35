"""The worker runtime (``perfectqueue.worker``): supervisor, processors, signals and dispatch.

    import re
    from perfectqueue.worker import Base, Dispatch, run

    class TestHandler(Base):
        def run(self):
            print("acquired task:", self.task.key, self.task.data)
            self.task.finish()

    class MyDispatch(Dispatch):
        pass

    MyDispatch.route("type1", TestHandler)
    MyDispatch.route(re.compile(r"^regexp-.*$"), "TestHandler")

    run(MyDispatch, lambda: {"url": "http://127.0.0.1:8000", "queue": "default"})

or ``perfectqueue run mymodule:MyDispatch -c config.yml``. See docs/worker.md. Built on
``perfectqueue.client`` alone: it never imports the service.
"""

from __future__ import annotations

from .application import Base
from .config import WorkerConfig
from .dispatch import Dispatch
from .signals import Signals
from .supervisor import ConfigLoader, Supervisor, run
from .task import WorkerTask

__all__ = ["Base", "ConfigLoader", "Dispatch", "Signals", "Supervisor", "WorkerConfig", "WorkerTask", "run"]
