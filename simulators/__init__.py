"""Physical device models, fraud and drift scenarios with ground truth, and servers for them.

- `simulators.offline.generate(scenario, *, seed, days, step_s=None, start_ns=None)`
  returns an `OfflineRun`: per device a `DeviceStream` (kind, ts_ns, fields,
  ok), the balance groups and the ground truth, as numpy arrays, without any
  network.
- `simulators.serve.serve(scenario, *, modbus_port=0, mqtt=None, speed=1.0,
  seed=0, ...)` is an async context manager serving the same values over
  Modbus TCP (all devices by unit id on one port), Modbus RTU on a pty, and
  MQTT (Tasmota, Shelly Gen2 or flat JSON payloads), on a simulated clock.
- `simulators.catalogue`: the standard site and one named scenario per
  condition (`scenario_names()`, `get_scenario(name_or_path)`); scenario
  files such as ``simulators/scenarios/demo.toml``.
- `simulators.spec`: the records (`Scenario`, `DeviceSpec`, `GroupSpec`,
  `Condition`, `Label`, `GroundTruth`).
- `simulators.models`: the electricity, water, gas, nozzle and tank models.
"""
