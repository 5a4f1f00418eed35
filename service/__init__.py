"""The HTTP service and the store beneath it (installed with the ``service`` extra)."""
