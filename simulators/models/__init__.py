"""Physical device models. Each generates one simulated day of one device at a time.

Models are deterministic: every random draw comes from a generator seeded by
(run seed, device id, day, stream), so day d of a device is the same whatever
the run length, and a served device shows exactly what the offline mode
generates. Cumulative registers carry over from one day to the next in the
model object, so days must be generated in order.
"""

from simulators.models.common import DayContext, DayOut, Model

__all__ = ["DayContext", "DayOut", "Model"]
