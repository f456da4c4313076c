"""Shared fixtures: real servers (NATS with JetStream, PostgreSQL) on free loopback ports."""

pytest_plugins = ["tests.fixtures_nats", "tests.fixtures_pg"]
