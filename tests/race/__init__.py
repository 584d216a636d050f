"""The delivery gate's race and fault harness (run by tests/test_race*.py)."""
