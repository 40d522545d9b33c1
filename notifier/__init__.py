"""notifier: a multilingual breach-notification mailer with a verifiable ledger."""

__version__ = "0.1.0"
