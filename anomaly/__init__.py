"""Pure-numpy detectors for cheating devices and metrological drift.

Batches of numpy arrays in, `Finding`s out. Never imports asyncio, I/O,
`drivers` or `gateway`.
"""

from anomaly.finding import Finding, Severity

__all__ = ["Finding", "Severity"]
