"""Plugins for the whole suite: pytester, for running the trelay pytest plugin as a user
would (tests/shim). The trelay plugin itself loads through its `pytest11` entry point."""

pytest_plugins = ["pytester"]
