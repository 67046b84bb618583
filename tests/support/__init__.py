"""Test helpers: real servers, a fault-injecting TCP proxy, independent reference implementations."""
