"""Workers: claiming runs, leases and heartbeats, concurrency, cron, graceful shutdown."""

from .worker import Worker

__all__ = ["Worker"]
