"""An Amazon SQS-compatible endpoint over the same queues and the same runtime (docs/sqs.md)."""

from .endpoint import PREFIX, SqsEndpoint

__all__ = ["PREFIX", "SqsEndpoint"]
