"""Composition: rendered parts -> the RFC 5322 bytes a person receives.

The message is built by hand rather than with `email.message.EmailMessage`: a whole
campaign is composed before sending, and `as_bytes()` costs about 2 ms a message where
this costs a small fraction of that. What makes hand-building safe is that every piece
of text that reaches a header goes through one of three writers here:

- `_phrase()` for display names: control characters become spaces, then the name is
  written as an atom, a quoted-string with `\\` and `"` escaped, or RFC 2047 encoded
  words; a name can never end the header, open a new one or change the address;
- `_checked_address()` for addresses: anything that could break out of `<...>` is refused;
- `_unstructured()` for the Subject: cleaned the same way, then folded or encoded.

tests/test_compose.py parses the output back with the stdlib `email` package and compares
it with a message built by `EmailMessage`, so the two paths cannot silently drift apart.

Bodies are always 7-bit clean (7bit, quoted-printable or base64), so the same bytes go to
any server, with or without 8BITMIME; only the `To` address depends on SMTPUTF8.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, parseaddr
from typing import Protocol

import idna

from notifier.campaign import Campaign
from notifier.config import Settings
from notifier.errors import CampaignError, ComposeError, ConfigError, SMTPUTF8Required
from notifier.render import RenderedMessage
from notifier.verp import base32
from notifier.volunteer import Volunteer

CRLF = "\r\n"
# RFC 5322: lines SHOULD be at most 78 characters (and MUST be at most 998).
MAX_LINE = 78
# Encoded words of at most 68 characters (RFC 2047 allows 75): 12 of syntax and 56 of
# base64, which carry 42 bytes of UTF-8. "Reply-To: " plus one word is then 78 characters,
# so the first word always fits on the header's own line.
_WORD_BYTES = 42
_LONG_WORD = 60

# Headers a DKIM signature covers. Absent ones (In-Reply-To on a first notice) are still
# listed, which signs their absence: nobody can add them in transit.
DKIM_HEADERS: tuple[str, ...] = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Reply-To",
    "In-Reply-To",
    "References",
)


@dataclass(frozen=True)
class ComposedMessage:
    """One campaign's message to one volunteer, ready for the wire."""

    message_id: str  # with angle brackets, as in the header
    volunteer_id: str
    campaign_id: str
    recipient: str  # the normalised (Unicode) address
    recipient_ascii: str  # A-label domain form, for servers without SMTPUTF8
    data: bytes  # the whole message, CRLF line endings


@dataclass(frozen=True)
class DkimKey:
    """A DKIM signing key; `domain` defaults to the sender's domain."""

    selector: str
    private_key: bytes  # PEM
    domain: str | None = None


def load_dkim_key(settings: Settings) -> DkimKey | None:
    """The DKIM key configured in notifier.toml ([dkim] selector, key_file), if any."""
    if settings.dkim_selector is None and settings.dkim_key_file is None:
        return None
    if settings.dkim_selector is None or settings.dkim_key_file is None:
        raise ConfigError(
            "DKIM needs both a selector and a key_file",
            file=settings.source,
            field="dkim",
            hint='set [dkim] selector = "..." and key_file = "path/to/key.pem", or neither',
        )
    try:
        key = settings.dkim_key_file.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the DKIM key ({exc.strerror})",
            file=settings.dkim_key_file,
            field="dkim.key_file",
        ) from exc
    dkim_key = DkimKey(selector=settings.dkim_selector, private_key=key)
    _check_dkim_key(dkim_key, settings)
    return dkim_key


def _check_dkim_key(key: DkimKey, settings: Settings) -> None:
    """Sign a tiny message now, so an unusable key stops a send before it starts."""
    try:
        sign_dkim(
            b"From: check@example.org\r\nSubject: key check\r\n\r\nbody\r\n",
            selector=key.selector,
            domain="example.org",
            private_key=key.private_key,
        )
    except ComposeError as exc:
        raise ConfigError(
            "the DKIM key cannot be used for signing",
            file=settings.dkim_key_file,
            field="dkim.key_file",
            hint="give a PEM private key (openssl genrsa 2048 writes one)",
        ) from exc


class MessageRenderer(Protocol):
    """What build_message needs from a renderer (notifier.render.Renderer)."""

    def render(self, volunteer: Volunteer, *, reached: bool | None = None) -> RenderedMessage: ...


# --- identifiers ---------------------------------------------------------------------


def message_id_for(
    campaign_id: str, volunteer_id: str, domain: str, key: bytes | None = None
) -> str:
    """The Message-ID of `campaign_id`'s message to `volunteer_id`, e.g. `<abc...@example.org>`.

    With the ledger's Message-ID key (`Ledger.message_id_key`): keyed hashes, the same for
    one ledger (a re-run produces the same message) and unguessable without the key, so
    nobody can write a bounce naming a real person's notice. The ledger keeps what it
    issued; a follow-up looks the earlier ID up there. Without a key (a preview, never
    sent): unkeyed hashes. The local part is made of hashes only: no personal data in a
    header that mail systems log everywhere.

    It is two hashes: one of the volunteer's group (`_group`: people whose
    IDs differ only in their last characters, who are next to one another in the order
    a send walks), then one of the volunteer. The ledger's index of Message-IDs then
    takes a send's new messages a group at a time, in a few places, rather than each at
    a random place of its own (on a ledger of millions, a page written and checkpointed
    again for nearly every message). All it tells a reader of two IDs is whether the two
    people's IDs share a group.
    """
    group = _group_part(campaign_id, _group(volunteer_id), key)
    person = _id_hash(f"notifier\0{campaign_id}\0{volunteer_id}", key)
    local = group + person[: _LOCAL_CHARS - _GROUP_CHARS]
    return f"<{local}@{_ascii_domain(domain)}>"


_LOCAL_CHARS = 26  # 130 bits
_GROUP_CHARS = 6  # of them the group's: 100 bits left for the person
_GROUP_SPAN = 2  # a group: the IDs equal but for their last two characters


def _group(volunteer_id: str) -> str:
    """The volunteer's group: a roster numbered HMR-000001, HMR-000002, ... has groups of
    a hundred; IDs in no order (UUIDs) make groups of one, as if there were none."""
    return volunteer_id[:-_GROUP_SPAN]


# A send asks for a group's part a hundred times in a row: made once.
@functools.lru_cache(maxsize=64)
def _group_part(campaign_id: str, group: str, key: bytes | None) -> str:
    return _id_hash(f"notifier\0{campaign_id}\0group\0{group}", key)[:_GROUP_CHARS]


def _id_hash(text: str, key: bytes | None) -> str:
    payload = text.encode()
    if key is None:
        return base32(hashlib.sha256(payload).digest())
    return base32(hmac.new(key, payload, hashlib.sha256).digest())


def _ascii_domain(domain: str) -> str:
    """A domain in lowercase A-label form (IDNA 2008 with UTS #46 mapping)."""
    domain = domain.strip().rstrip(".")
    if domain.isascii():
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ComposeError(
            f"not a valid internationalised domain: {domain!r} ({exc})",
            hint="check the address for typing errors",
        ) from exc


def sender_domain(campaign: Campaign) -> str:
    """The domain of the campaign's From address, in A-label form."""
    _name, address = _parse_mailbox(campaign.sender, campaign, "from")
    return _ascii_domain(address.rpartition("@")[2])


# --- header writers ------------------------------------------------------------------

# Every C0/C1 control, DEL and the Unicode line/paragraph separators become spaces: none of
# them belongs in a name or subject, and CR/LF would end the header.
_CONTROLS = {c: " " for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]}
# Runs of white space collapse to one space; a single other space (the ideographic space
# in 鈴木　一郎) stays as written.
_SPACES = re.compile(r"\s{2,}")
# RFC 5322 atext plus space: a phrase of these needs no quoting.
_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]+")
# Characters that can never appear in an address we write into a header.
_ADDRESS_BREAKERS = re.compile(r"[\x00-\x20\x7f<>()\[\],;:\"\\]")


def clean_header_text(text: str) -> str:
    """Text made safe for one header line: controls to spaces, runs of spaces collapsed."""
    return _SPACES.sub(" ", text.translate(_CONTROLS)).strip()


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 base64 encoded words of at most 68 characters, never splitting a character.

    Most names fit in one word. A longer text is cut after a space where it can be: the
    space stays inside the earlier word, because a reader drops the whitespace between two
    encoded words (RFC 2047 6.2).
    """
    data = text.encode("utf-8")
    if len(data) <= _WORD_BYTES:
        return [_encoded_word(data)]
    words: list[str] = []
    chunk = ""
    size = 0
    for char in text:
        width = len(char.encode("utf-8"))
        if size + width > _WORD_BYTES:
            cut = chunk.rfind(" ") + 1
            if cut <= 0:
                cut = len(chunk)
            words.append(_encoded_word(chunk[:cut].encode("utf-8")))
            chunk = chunk[cut:]
            size = len(chunk.encode("utf-8"))
        chunk += char
        size += width
    words.append(_encoded_word(chunk.encode("utf-8")))
    return words


def _encoded_word(data: bytes) -> str:
    return f"=?utf-8?b?{base64.b64encode(data).decode('ascii')}?="


def _needs_encoding(text: str) -> bool:
    # "=?" in plain text would be mistaken for an encoded word by the reader's client, and
    # a word too long to fold within MAX_LINE folds as encoded words.
    return not text.isascii() or "=?" in text or max(map(len, text.split(" "))) > _LONG_WORD


def _phrase(name: str) -> list[str]:
    """A display name as tokens to be joined by folding white space.

    Plain atoms, a quoted-string with `\\` and `"` escaped (cut at its spaces, which
    folding keeps), or encoded words.
    """
    name = clean_header_text(name)
    if not name:
        return []
    if _needs_encoding(name):
        return _encoded_words(name)
    if not _ATOM_PHRASE.fullmatch(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return name.split(" ")


def _fold(name: str, tokens: list[str]) -> str:
    """`Name: tokens`, joined by spaces or by CRLF + space so lines stay within MAX_LINE.

    Every join is folding white space, which unfolds to the space it replaced.
    """
    lines: list[str] = []
    line = f"{name}:"
    for token in tokens:
        # Never fold before the first token: parsers keep that break as a leading space.
        if len(line) + 1 + len(token) > MAX_LINE and line != f"{name}:":
            lines.append(line)
            line = ""
        line += f" {token}"
    lines.append(line)
    return CRLF.join(lines) + CRLF


def _address_header(name: str, display: str, address: str) -> str:
    """`Name: display <address>`: a header with exactly one mailbox, whatever `display` is."""
    tokens = _phrase(display)
    return _fold(name, [*tokens, f"<{address}>"] if tokens else [address])


def _unstructured(name: str, text: str) -> str:
    """An unstructured header (Subject): plain and folded at spaces, or encoded words."""
    text = clean_header_text(text)
    return _fold(name, _encoded_words(text) if _needs_encoding(text) else text.split(" "))


def _checked_address(address: str, *, smtputf8: bool, where: str) -> str:
    """The address as it may appear inside `<...>`, or an error saying why it may not."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or _ADDRESS_BREAKERS.search(address):
        raise ComposeError(
            f"{address!r} cannot be written into a mail header",
            field=where,
            hint="correct the address in the roster or campaign and import it again",
        )
    if not smtputf8:
        if not local.isascii():
            raise SMTPUTF8Required(
                f"{address!r} has a non-ASCII local part and needs a server with SMTPUTF8",
                field=where,
                hint="send through a server that offers SMTPUTF8, or reach this person by post",
            )
        return f"{local}@{_ascii_domain(domain)}"
    return address


def _parse_mailbox(value: str, campaign: Campaign, field: str) -> tuple[str, str]:
    name, address = parseaddr(value)
    if "@" not in address:
        raise CampaignError(
            f"{value!r} is not an address like 'Name <someone@example.org>'",
            file=campaign.path,
            field=field,
        )
    return name, address


# --- bodies --------------------------------------------------------------------------


def _base64_lines(data: bytes) -> str:
    """Base64 in lines of 76 characters (RFC 2045), CRLF-terminated.

    Three times faster than base64.encodebytes, which works 57 bytes at a time in Python.
    """
    encoded = binascii.b2a_base64(data, newline=False).decode("ascii")
    return CRLF.join([encoded[i : i + 76] for i in range(0, len(encoded), 76)]) + CRLF


# Quoted-printable is cached by the line (each Composer keeps its own cache): most lines
# of a campaign's parts are the same in every message, and b2a_qp costs some 40 µs for a
# 5 KB part.
_QP_CACHE_LINES = 8192


def _quoted_printable(lines: list[str], cache: dict[str, str]) -> str:
    """binascii.b2a_qp(istext=True) of the lines joined with CRLF, each line ending in one.

    The same bytes as encoding the whole text at once: b2a_qp encodes line by line (soft
    breaks, trailing white space and a lone leading dot depend on the line alone).
    `lines` is a text ending in a line feed, split at its line feeds: the last is empty.
    `cache` maps a line to its encoding, and is filled here.
    """
    known = cache.get
    # An encoded line is never empty (it ends in CRLF), so `or` means "not cached yet".
    return "".join([known(line) or _quoted_printable_line(line, cache) for line in lines[:-1]])


def _quoted_printable_line(line: str, cache: dict[str, str]) -> str:
    encoded = binascii.b2a_qp(line.encode("utf-8") + b"\r\n", istext=True).decode("ascii")
    if len(cache) >= _QP_CACHE_LINES:
        cache.clear()  # the lines that vary (names, dates) would fill it for ever
    cache[line] = encoded
    return encoded


def _body_part(content_type: str, text: str, boundary: str, qp_cache: dict[str, str]) -> str:
    """One MIME part: headers, blank line, body, in the lightest 7-bit-clean encoding."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    lines = text.split("\n")
    if text.isascii() and max(map(len, lines)) <= MAX_LINE and boundary not in text:
        cte, body = "7bit", CRLF.join(lines)
    else:
        raw = text.encode("utf-8")
        non_ascii = len(raw) - len(text.encode("ascii", "ignore"))
        # Quoted-printable triples every non-ASCII byte, base64 grows everything by a
        # third: mostly-English text stays readable as QP, Japanese is smaller as base64.
        if non_ascii * 6 < len(raw):
            cte = "quoted-printable"
            body = _quoted_printable(lines, qp_cache)
        else:
            cte = "base64"
            body = _base64_lines(raw)
    if not body.endswith(CRLF):
        body += CRLF
    # The CRLF before a boundary belongs to the boundary (RFC 2046 5.1.1): one more keeps
    # the text's own final line break.
    body += CRLF
    return (
        f'Content-Type: {content_type}; charset="utf-8"{CRLF}'
        f"Content-Transfer-Encoding: {cte}{CRLF}{CRLF}{body}"
    )


# --- the composer --------------------------------------------------------------------


class Composer:
    """Composes one campaign's messages: what is the same for every message (header
    pieces, the renderer, the DKIM key) is worked out once.

    `build` is the one path from a volunteer to signed bytes, behind preview, check and
    send (in this process or in a compose worker, see notifier.compose_pool), so a preview
    shows the bytes a send produces. Keep one Composer for a whole campaign: it caches
    what repeats from message to message.
    """

    def __init__(
        self,
        campaign: Campaign,
        renderer: MessageRenderer | None = None,
        *,
        dkim: DkimKey | None = None,
    ) -> None:
        self.campaign = campaign
        self.renderer = renderer
        self.dkim = dkim
        self.domain = sender_domain(campaign)
        self._qp_lines: dict[str, str] = {}
        # Sender addresses are written with an A-label domain whatever the transport.
        # The From display name is in each reader's language (the contact point's name).
        self._from = {
            locale: self._mailbox_header("From", campaign.sender_for(locale), "from")
            for locale in campaign.reply_to
        }
        self._default_from = self._mailbox_header("From", campaign.sender, "from")
        self._from_is_ascii = self._default_from.isascii()  # the address; names are encoded
        self._reply_to = {
            locale: self._mailbox_header("Reply-To", value, f"reply_to.{locale}")
            for locale, value in campaign.reply_to.items()
        }
        self._subjects: dict[str, str] = {}

    def _mailbox_header(self, name: str, value: str, field: str) -> str:
        display, address = _parse_mailbox(value, self.campaign, field)
        local, _, domain = address.rpartition("@")
        address = _checked_address(f"{local}@{_ascii_domain(domain)}", smtputf8=True, where=field)
        return _address_header(name, display, address)

    def _subject(self, subject: str) -> str:
        header = self._subjects.get(subject)
        if header is None:
            header = _unstructured("Subject", subject)
            if len(self._subjects) < 64:  # a campaign has a handful of subjects
                self._subjects[subject] = header
        return header

    def compose(
        self,
        rendered: RenderedMessage,
        volunteer: Volunteer,
        *,
        date: datetime,
        smtputf8: bool = True,
    ) -> bytes:
        """The whole message as bytes with CRLF line endings."""
        return self.compose_with_id(rendered, volunteer, date=date, smtputf8=smtputf8)[1]

    def compose_with_id(
        self,
        rendered: RenderedMessage,
        volunteer: Volunteer,
        *,
        date: datetime,
        smtputf8: bool = True,
        message_id: str | None = None,
        in_reply_to: str | None = None,
    ) -> tuple[str, bytes]:
        """The Message-ID and the whole message (see compose): the ID is worked out once.

        `message_id` / `in_reply_to`: as the ledger issued them (a send); otherwise worked
        out without a key, for a preview. `in_reply_to=""`: a follow-up to someone the
        notice it follows never reached, so there is nothing to thread under.
        """
        if date.tzinfo is None or date.utcoffset() is None:
            raise ValueError("compose needs a timezone-aware date")
        campaign = self.campaign
        if not smtputf8 and not self._from_is_ascii:
            raise SMTPUTF8Required(
                f"the From address {campaign.sender!r} has a non-ASCII local part",
                file=campaign.path,
                field="from",
                hint="use an ASCII From address, or a server that offers SMTPUTF8",
            )
        reply_to = self._reply_to.get(rendered.locale)
        if reply_to is None:
            raise CampaignError(
                f"no Reply-To address for locale {rendered.locale!r}",
                file=campaign.path,
                field=f"reply_to.{rendered.locale}",
                hint="add it to the campaign file or to [sender] reply_to in notifier.toml",
            )
        if not smtputf8 and not reply_to.isascii():
            raise SMTPUTF8Required(
                f"the Reply-To address for {rendered.locale!r} has a non-ASCII local part",
                file=campaign.path,
                field=f"reply_to.{rendered.locale}",
                hint="use an ASCII Reply-To address, or a server that offers SMTPUTF8",
            )
        recipient = volunteer.email if smtputf8 else volunteer.email_ascii
        to_address = _checked_address(recipient, smtputf8=smtputf8, where="email")
        if message_id is None:
            message_id = message_id_for(campaign.campaign_id, volunteer.volunteer_id, self.domain)
        boundary = f"=_{message_id[1:27]}"
        headers = [
            self._from.get(rendered.locale, self._default_from),
            _address_header("To", volunteer.display_name, to_address),
            reply_to,
            self._subject(rendered.subject),
            f"Date: {format_datetime(date)}{CRLF}",
            f"Message-ID: {message_id}{CRLF}",
        ]
        if campaign.follows:
            earlier = (
                message_id_for(campaign.follows, volunteer.volunteer_id, self.domain)
                if in_reply_to is None
                else in_reply_to
            )
            if earlier:
                headers.append(f"In-Reply-To: {earlier}{CRLF}References: {earlier}{CRLF}")
        headers.append(
            f"MIME-Version: 1.0{CRLF}"
            f"Content-Language: {clean_header_text(rendered.locale)}{CRLF}"
            f'Content-Type: multipart/alternative; boundary="{boundary}"{CRLF}{CRLF}'
        )
        delimiter = f"--{boundary}{CRLF}"
        message = "".join(
            [
                *headers,
                delimiter,
                _body_part("text/plain", rendered.text, boundary, self._qp_lines),
                delimiter,
                _body_part("text/html", rendered.html, boundary, self._qp_lines),
                f"--{boundary}--{CRLF}",
            ]
        )
        # utf-8, not ascii: with SMTPUTF8 the To address may be non-ASCII (RFC 6532).
        return message_id, message.encode("utf-8")

    def build(
        self,
        volunteer: Volunteer,
        *,
        date: datetime,
        smtputf8: bool = True,
        message_id: str | None = None,
        in_reply_to: str | None = None,
        reached: bool | None = None,
    ) -> ComposedMessage:
        """Render, compose and (with a DKIM key) sign one message (IDs: see compose_with_id).

        For a follow-up, whether the notice it follows reached this person decides its
        wording (Renderer.render): `reached`, or else told by `in_reply_to` ("" when it
        never reached them, so there is nothing to thread under).
        """
        if self.renderer is None:
            raise ValueError("this Composer has no renderer: pass one to build messages")
        if reached is None and self.campaign.follows and in_reply_to is not None:
            reached = in_reply_to != ""
        if reached is False:
            in_reply_to = ""  # never threaded under a notice they did not get
        rendered = self.renderer.render(volunteer, reached=reached)
        message_id, data = self.compose_with_id(
            rendered,
            volunteer,
            date=date,
            smtputf8=smtputf8,
            message_id=message_id,
            in_reply_to=in_reply_to,
        )
        if self.dkim is not None:
            data = sign_dkim(
                data,
                selector=self.dkim.selector,
                domain=self.dkim.domain or self.domain,
                private_key=self.dkim.private_key,
            )
        return ComposedMessage(
            message_id=message_id,
            volunteer_id=volunteer.volunteer_id,
            campaign_id=self.campaign.campaign_id,
            recipient=volunteer.email,
            recipient_ascii=volunteer.email_ascii,
            data=data,
        )


def compose_message(
    rendered: RenderedMessage,
    campaign: Campaign,
    volunteer: Volunteer,
    *,
    date: datetime,
    smtputf8: bool = True,
) -> bytes:
    """The RFC 5322 bytes of `rendered` from `campaign` to `volunteer`.

    multipart/alternative (text/plain, then text/html), UTF-8, RFC 2047 headers,
    Content-Language, a deterministic Message-ID, and In-Reply-To/References for a
    follow-up. With `smtputf8=False` the To address is in A-label form, and an address
    whose local part is not ASCII raises SMTPUTF8Required. For one message: many go
    through one `Composer`.
    """
    return Composer(campaign).compose(rendered, volunteer, date=date, smtputf8=smtputf8)


def build_message(
    renderer: MessageRenderer,
    campaign: Campaign,
    volunteer: Volunteer,
    *,
    date: datetime,
    smtputf8: bool = True,
    dkim: DkimKey | None = None,
    reached: bool | None = None,
) -> ComposedMessage:
    """Render, compose and (with a key) DKIM-sign one message: `Composer.build`, for one
    message (`reached`: for a follow-up, see Composer.build). Many messages of one
    campaign go through one `Composer`."""
    composer = Composer(campaign, renderer, dkim=dkim)
    return composer.build(volunteer, date=date, smtputf8=smtputf8, reached=reached)


def sign_dkim(data: bytes, *, selector: str, domain: str, private_key: bytes) -> bytes:
    """`data` with a DKIM-Signature header (relaxed/simple, rsa-sha256) prepended."""
    import dkim  # imported here: only campaigns with a DKIM key pay for it

    try:
        signature = dkim.sign(
            data,
            selector.encode("ascii"),
            _ascii_domain(domain).encode("ascii"),
            private_key,
            include_headers=[h.encode("ascii") for h in DKIM_HEADERS],
        )
    except dkim.DKIMException as exc:
        raise ComposeError(
            # dkimpy's messages can span lines; the CLI prints one.
            "DKIM signing failed: " + " ".join(str(exc).split()),
            field="dkim",
            hint="check the key file (a PEM RSA private key) and the selector",
        ) from exc
    return bytes(signature) + data
