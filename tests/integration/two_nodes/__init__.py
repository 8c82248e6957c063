"""The tests on a real two-node Ray cluster: a package, so that its one cluster
(conftest.py) is stopped after its last test instead of idling to the end of the session."""
