"""Config, runtime, pipeline, storage, alerts, ledger, API, dashboard and CLI."""
