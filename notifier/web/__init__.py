"""The web console: the same operations as the command line, for people who do not use a
terminal, served on this machine only.

Like the command line, it only calls `notifier.service` (tests/test_architecture.py
holds it to that): a rule that lived here would be skipped by the command line, and one
that lives in the service holds for both.
"""
