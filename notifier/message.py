"""Messages: one campaign to one volunteer, and what happened when we tried to deliver it.

Plain data shared by the ledger (which stores it), delivery (which produces outcomes)
and the CLI (which shows them). No behaviour lives here.
"""

from __future__ import annotations

from dataclasses import dataclass

# Message states that say the message still has to go out (a resumed send picks them up).
RESUMABLE_STATES: tuple[str, ...] = ("pending", "deferred")
# States `notifier resend` may send again, as a new attempt of the same message. Not
# sent/delivered (that would tell someone twice) nor bounced_hard (suppressed: a letter).
RESENDABLE_STATES: tuple[str, ...] = (
    "failed_temporary",
    "failed_permanent",
    "bounced_soft",
)
# States that mean the message left us and the server took it (or later told us more).
DELIVERED_STATES: tuple[str, ...] = ("sent", "delivered", "bounced_soft", "bounced_hard")
# Outcomes of one delivery attempt, as classified by notifier.deliver.
ATTEMPT_OUTCOMES: tuple[str, ...] = ("sent", "deferred", "failed_temporary", "failed_permanent")


@dataclass(frozen=True)
class MessageRow:
    """A message as the ledger knows it, joined with its recipient."""

    message_id: str  # RFC 5322 Message-ID, with angle brackets
    campaign_id: str
    volunteer_id: str
    verp_token: str
    state: str
    attempts: int  # delivery attempts so far: each `sending` event adds one
    email: str = ""
    smtp_reply: str = ""
    queue_id: str = ""


@dataclass(frozen=True)
class NewMessage:
    """A message to be registered as pending (Message-ID and VERP token are derived)."""

    message_id: str
    volunteer_id: str
    verp_token: str


@dataclass(frozen=True)
class DeliveryOutcome:
    """The result of one attempt to hand one message to the SMTP server.

    `state` is one of ATTEMPT_OUTCOMES (or `suppressed` when the message was skipped).
    `code` is the SMTP reply code, None for network errors (refused, reset, timeout).
    """

    message_id: str
    campaign_id: str
    volunteer_id: str
    state: str
    attempt: int
    code: int | None = None
    reply: str = ""
    queue_id: str | None = None
    reason: str = ""  # why, in words, when it was not sent

    def event_data(self) -> dict[str, object]:
        data: dict[str, object] = {"attempt": self.attempt, "code": self.code, "reply": self.reply}
        if self.queue_id:
            data["queue_id"] = self.queue_id
        if self.reason:
            data["reason"] = self.reason
        return data
