"""Fixtures of the workflow tests (helpers live in workflow_helpers.py)."""

from workflow_helpers import local_run  # noqa: F401  (session fixture)
