"""The tests on real two-node Ray clusters: a package, so that the shared cluster
(conftest.py) is stopped after its last test instead of idling to the end of the session."""
