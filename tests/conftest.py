"""Shared pytest setup: the test harness (fleet, engines, stand-ins) lives in tests/harness/."""

pytest_plugins = ["harness.fleet_fixtures", "harness.engine_fixtures"]
