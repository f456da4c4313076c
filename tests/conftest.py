"""Shared fixtures: real servers (NATS with JetStream, PostgreSQL) on free loopback ports."""

import os

from tests.stack_helpers import TEST_SITE

pytest_plugins = ["tests.fixtures_nats", "tests.fixtures_pg"]

os.environ.update(TEST_SITE)  # stacks started in this process: the test site's policy
