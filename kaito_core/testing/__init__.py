"""Test kit for third-party kaito plugins (a pytest plugin): fixtures and conformance suites."""
