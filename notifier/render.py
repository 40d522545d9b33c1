"""Rendering: a campaign and a volunteer -> subject, text and HTML in the volunteer's locale.

Templates live in `templates/<locale>/`. A notice `<name>` has two entry files,
`<name>.txt` and `<name>.html`, which share everything else: the paragraphs are written
once per locale in `_<name>.j2`, which extends `_layout.j2`. `format` ("txt" or "html")
is a global of the Jinja2 environment, so the same paragraph source is compiled once
without escaping (text) and once with HTML autoescaping (html): a name holding `<script>`
or quotes is escaped in the HTML part and left alone in the text part.

What a notice says differently by the reader's exposure lives in a template of its own,
`<name>/<exposure>.j2`, which `_<name>.j2` imports by name (`wording_for`). Templates are
never given the exposure to test, so no reader can fall through to another exposure's
words. A follow-up's wording also depends on whether the notice it follows reached the
reader (`earlier_notice_reached`): Renderer.render is told, never guesses.

Every required element of a notice is a block named after it (`what_happened`,
`data_involved`, ...): `notifier check` finds them by those names.

Short strings (headings, labels, names of the kinds of data, the greeting) are gettext'd
with `_()` and translated in the Babel catalogs (see notifier.catalogs). Dates go through
Babel in the reader's locale: `14 March 2020`, `2020年3月14日`; how each locale lays out
its text is in notifier.locales.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import jinja2
from babel.core import Locale
from babel.dates import format_date
from babel.lists import format_list
from babel.localedata import LocaleDataDict
from markupsafe import Markup, escape

from notifier.campaign import Campaign
from notifier.catalogs import load_translations
from notifier.config import Contact
from notifier.errors import RenderError, TemplateRenderError
from notifier.locales import TextStyle, locale_spec
from notifier.volunteer import Volunteer, display_name

FORMATS: tuple[str, ...] = ("txt", "html")

# Control characters (CR, LF, NUL, ...) and line/paragraph separators in a name would
# break the layout of the text part; they become single spaces.
# The private-use characters that delimit name slots (see Renderer) go the same way.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ue000\ue001]+")
_SPACES = re.compile(r"[ \t\u3000]{2,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_BLANK_LINES = re.compile(r"\n{3,}")
_LINE_BREAK = re.compile(r"[ \t]*\n[ \t]*")


@dataclass(frozen=True)
class RenderedMessage:
    campaign_id: str
    volunteer_id: str
    locale: str
    subject: str
    text: str
    html: str


# --- dates ----------------------------------------------------------------------------


def long_date(value: date, locale: str) -> str:
    """`14 March 2020` (en), `2020年3月14日` (ja)."""
    return str(format_date(value, format="long", locale=locale_spec(locale).babel))


def date_range(start: date, end: date, locale: str) -> str:
    """`21–23 March 2020` (en), `2020年3月21日～23日` (ja).

    CLDR has no interval format with the month spelt out for en_GB, only `21 – 23 Mar
    2020`; the long form is the abbreviated pattern with the month widened.
    """
    babel_locale = Locale.parse(locale_spec(locale).babel)
    formats: LocaleDataDict = babel_locale.interval_formats["yMMMd"]
    if start.year != end.year:
        key = "y"
    elif start.month != end.month:
        key = "M"
    else:
        key = "d"
    if start == end:
        return long_date(start, locale)
    first, second = (re.sub(r"(?<!M)MMM(?!M)", "MMMM", p) for p in formats[key])
    return str(format_date(start, first, locale=babel_locale)) + str(
        format_date(end, second, locale=babel_locale)
    )


def between_dates(start: date, end: date, locale: str) -> str:
    """`21 and 23 March 2020`: the days something happened between, for an English
    sentence ("Between 21 and 23 March 2020, ..."). Other languages write the range
    itself (date_range: 2020年3月21日～23日にかけて)."""
    if start == end:
        return long_date(end, locale)
    if (start.year, start.month) == (end.year, end.month):
        first = str(start.day)
    elif start.year == end.year:
        first = str(format_date(start, "d MMMM", locale=locale_spec(locale).babel))
    else:
        first = long_date(start, locale)
    return f"{first} and {long_date(end, locale)}"


def listed(items: Iterable[str], locale: str, style: Literal["standard", "or"] = "standard") -> str:
    """Items in a sentence as the locale lists them: `D, G, I or J` (en, style "or"),
    `a, b and c` (en), `D、G、I、J` (ja)."""
    return str(format_list(list(items), style=style, locale=locale_spec(locale).babel))


def join_lines(value: str, separator: str = " ") -> str:
    """A paragraph written over several source lines, as one line.

    English joins lines with a space; Japanese with nothing, as it puts no spaces
    between words. Markup stays Markup: only whitespace is removed.
    """
    joined = _LINE_BREAK.sub(separator, value.strip())
    # Safe: the input was already Markup, and only whitespace was taken out of it.
    return Markup(joined) if isinstance(value, Markup) else joined  # noqa: S704


# --- markup ---------------------------------------------------------------------------
# Templates mark up their text with filter blocks ({% filter p %}...{% endfilter %}) and
# filters ({{ _("What happened")|heading }}). Each part (text or HTML) gets its own
# filters, so one paragraph source serves both. Filters rather than macros: a Jinja2
# macro call costs several times more, and there are dozens in a notice.


_H2 = Markup('<h2 style="font-size: 18px; margin: 1.5em 0 0.5em;">%s</h2>\n')


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def text_filters(style: TextStyle) -> dict[str, Callable[[str], str]]:
    def heading(value: str) -> str:
        rule = f"\n{style.underline * len(value)}" if style.underline else ""
        return f"\n{style.heading_prefix}{value}{rule}\n\n"

    return {
        "p": lambda value: join_lines(value, style.join) + "\n\n",
        "bullets": lambda value: "".join(f"{style.bullet}{x}\n" for x in _lines(value)) + "\n",
        "address": lambda value: "".join(f"    {x}\n" for x in _lines(value)) + "\n",
        "heading": heading,
        "signature": lambda value: "".join(f"{x}\n" for x in _lines(value)),
    }


def html_filters(style: TextStyle) -> dict[str, Callable[[str], Markup]]:
    # escape() leaves Markup (the autoescaped output of a block) as it is, and escapes
    # anything else; the lines of Markup are Markup, so nothing is escaped twice.
    def p(value: str) -> Markup:
        return Markup("<p>%s</p>\n") % join_lines(escape(value), style.join)

    def bullets(value: str) -> Markup:
        items = Markup("").join(Markup("<li>%s</li>\n") % x for x in _lines(escape(value)))
        return Markup("<ul>\n%s</ul>\n") % items

    def address(value: str) -> Markup:
        lines = Markup("<br>\n").join(_lines(escape(value)))
        return Markup('<p style="margin-left: 2em;">%s</p>\n') % lines

    def heading(value: str) -> Markup:
        return _H2 % escape(value)

    def signature(value: str) -> Markup:
        return Markup("<p>%s</p>\n") % Markup("<br>\n").join(_lines(escape(value)))

    return {
        "p": p,
        "bullets": bullets,
        "address": address,
        "heading": heading,
        "signature": signature,
    }


# --- environments ---------------------------------------------------------------------


@lru_cache(maxsize=64)
def _environment(
    templates_dir: Path, locale_dir: Path, locale: str, fmt: str
) -> jinja2.Environment:
    """One Jinja2 environment per (templates, catalogs, locale, format), kept per process."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir / locale),
        undefined=jinja2.StrictUndefined,
        # Escaping is decided per environment, not per file name: the shared `_*.j2`
        # paragraph files are compiled once for each format.
        autoescape=fmt == "html",  # noqa: S701 (the text part is not HTML)
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # Templates are read once per process: no stat() of every file on every render.
        auto_reload=False,
    )
    env.install_gettext_translations(  # type: ignore[attr-defined]
        load_translations(locale, locale_dir), newstyle=True
    )
    env.globals["format"] = fmt
    env.globals["locale"] = locale
    env.filters["long_date"] = lambda d: long_date(_date(d), locale)
    env.filters["date_range"] = lambda start, end: date_range(_date(start), _date(end), locale)
    env.filters["between"] = lambda start, end: between_dates(_date(start), _date(end), locale)
    env.filters["and_list"] = lambda items: listed(items, locale)
    # The labels of some words of a vocabulary, in order: `kinds|labels(kind_labels)`. A
    # word without a label is an error, never left out.
    env.filters["labels"] = lambda words, labels: [labels[word] for word in words]
    env.filters["or_list"] = lambda items: listed(items, locale, "or")
    style = locale_spec(locale).text_style
    env.filters.update(html_filters(style) if fmt == "html" else text_filters(style))
    return env


def _date(value: Any) -> date:
    """A filter's date argument, or the template error that names what is missing."""
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises UndefinedError, naming the missing variable
    if not isinstance(value, date):
        raise jinja2.TemplateRuntimeError(f"expected a date, got {value!r}")
    return value


# Errors that template code itself can raise, beyond Jinja2's own.
TEMPLATE_ERRORS = (
    jinja2.TemplateError,
    TypeError,
    ValueError,
    ArithmeticError,
    LookupError,
    AttributeError,
)


def environment(campaign: Campaign, locale: str, fmt: str) -> jinja2.Environment:
    """The environment rendering `campaign` in `locale` as `fmt` ("txt" or "html")."""
    return _environment(
        campaign.templates_dir.resolve(), campaign.locale_dir.resolve(), locale, fmt
    )


# --- errors ---------------------------------------------------------------------------


def template_location(exc: BaseException, templates_dir: Path) -> tuple[str | None, int | None]:
    """The template file and line where a Jinja2 error happened, as far as it is known."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return exc.filename or exc.name, exc.lineno
    # Jinja2 rewrites the traceback so template frames carry the template's file and line.
    found: tuple[str | None, int | None] = (None, None)
    root = str(templates_dir)
    tb: types.TracebackType | None = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(root):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def render_error(
    exc: Exception, campaign: Campaign, template: str, volunteer: Volunteer
) -> TemplateRenderError:
    file, line = template_location(exc, campaign.templates_dir.resolve())
    message = getattr(exc, "message", None) or str(exc)
    return TemplateRenderError(
        f"{type(exc).__name__}: {message}",
        file=file or template,
        line=line,
        volunteer_id=volunteer.volunteer_id,
    )


# --- rendering ------------------------------------------------------------------------


def clean_name(value: str) -> str:
    """A name part fit for a letter: no control characters, no runs of spaces."""
    return _SPACES.sub(" ", _CONTROL.sub(" ", value)).strip()


# A nickname written beside a name: in quotes ("Peggy", “Peggy”, 'Peggy' standing alone,
# so that O'Neill and D'Arcy keep their apostrophes) or in brackets ((Bob), （ボブ）).
_NICKNAME = re.compile(
    r"\s*(?:\"[^\"]*\"|“[^”]*”|„[^“”]*[“”]|(?<![^\s])'[^'\s][^']*'(?![^\s])|\([^)]*\)|（[^）]*）)"
)


_NICKNAME_MARK = re.compile("[\"“„'(（]")


def formal_name(value: str) -> str:
    """A name part without a nickname beside it: `Margaret "Peggy"` -> `Margaret`. A part
    that is nothing but a nickname is kept as it is: it is all the name there is."""
    if not _NICKNAME_MARK.search(value):
        return value  # nearly every name: no quote or bracket to look at
    formal = _SPACES.sub(" ", _NICKNAME.sub("", value)).strip()
    return formal or value


def tidy_text(text: str) -> str:
    """The text part: no trailing spaces, at most one blank line in a row, one final newline."""
    text = _TRAILING_SPACE.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip() + "\n"


def tidy_html(html: str) -> str:
    """The HTML part: no blank lines at all (they mean nothing in HTML), one final newline."""
    return "\n".join(line for line in html.splitlines() if line.strip()) + "\n"


def contact_point(campaign: Campaign, locale: str) -> Contact:
    """The contact point a notice in `locale` gives: notifier.toml's [contact], or, where
    none is configured (which `notifier check` refuses), the sender's name and the
    Reply-To address, so that a notice still tells people where to write."""
    configured = campaign.contact.get(locale)
    if configured is not None:
        return configured
    name, address = parseaddr(campaign.sender)
    reply = parseaddr(campaign.reply_to.get(locale, ""))[1]
    return Contact(organisation=name or address, name="", email=reply or address, postal_address=())


def wording_template(campaign: Campaign, exposure: str) -> str:
    """The template holding what `campaign`'s notice says to readers of one exposure:
    `<template>/<exposure>.j2` beside the notice's own templates (breach/published.j2)."""
    return f"{campaign.template}/{exposure}.j2"


# Name slots: a message is rendered once per shape with these in place of the names,
# then each person's names are put in. Private-use characters survive escaping and every
# filter unchanged, and clean_name() removes them from real names.
_SLOT = "\ue000{}\ue001"
_SLOTS = re.compile("\ue000([0-9])\ue001")
NAME_FIELDS: tuple[str, ...] = ("name", "family_name", "given_name")
# Shapes kept per Renderer; a campaign has a few dozen, the bound keeps memory flat.
MAX_SHAPES = 1024


@dataclass(frozen=True)
class _Shape:
    text: str
    html: str


class Renderer:
    """Renders one campaign for many volunteers, fast.

    The templates see a volunteer only through `context()`: the names, the exposure and
    data_held. Everything but the names is the message's *shape*; each shape is rendered
    once, with slots where the names go, and each person's message is that shape with
    their names filled in (HTML-escaped in the HTML part). So a message costs a few
    microseconds, and a template error is found at the first volunteer of a shape.
    Templates must treat names as opaque text: output them, never test or transform
    them (a filter on a name would see the slot, not the name).
    """

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self._templates: dict[str, tuple[jinja2.Template, jinja2.Template]] = {}
        self._shapes: dict[tuple[Any, ...], _Shape | TemplateRenderError] = {}
        # Bare addresses for the contact paragraph (the Reply-To has the display name).
        addresses = {loc: parseaddr(value)[1] or value for loc, value in campaign.reply_to.items()}
        self._shared: dict[str, Any] = {
            "campaign_id": campaign.campaign_id,
            "notice_date": campaign.notice_date,
            "dates": dict(campaign.dates),
            "facts": campaign.facts,
            "organisation": campaign.organisation,
            "reply_address": addresses,
        }
        # Per locale: the contact point, the addresses this notice comes from and replies
        # go to, the independent way to check a message, and where to write in Japanese
        # (for the other locales' notices), so every shape of a locale shares them.
        self._per_locale: dict[str, dict[str, Any]] = {}
        japanese = campaign.contact.get("ja")
        for locale in {*campaign.locales, *campaign.contact, *campaign.reply_to}:
            self._per_locale[locale] = {
                "contact": contact_point(campaign, locale),
                "sent_from": parseaddr(campaign.sender_for(locale))[1],
                "reply_to_address": addresses.get(locale, ""),
                "independent_check": campaign.organisation.independent_check.get(locale, ""),
                "japanese_email": (
                    None
                    if locale == "ja" or "ja" not in campaign.locales
                    else (japanese.email if japanese else addresses.get("ja"))
                ),
            }

    def template_name(self, fmt: str) -> str:
        return f"{self.campaign.template}.{fmt}"

    def templates(self, locale: str) -> tuple[jinja2.Template, jinja2.Template]:
        """The (text, html) entry templates of `locale`, loaded once."""
        pair = self._templates.get(locale)
        if pair is None:
            pair = (self._load(locale, "txt"), self._load(locale, "html"))
            self._templates[locale] = pair
        return pair

    def _load(self, locale: str, fmt: str) -> jinja2.Template:
        name = self.template_name(fmt)
        try:
            return environment(self.campaign, locale, fmt).get_template(name)
        except jinja2.TemplateNotFound as exc:
            raise RenderError(
                f"no template {exc.name!r} for locale {locale!r}",
                file=self.campaign.templates_dir / locale,
                hint="every locale needs the same templates",
            ) from exc
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(
                f"template syntax error: {exc.message}",
                file=exc.filename or name,
                row=exc.lineno,
            ) from exc

    def names(self, volunteer: Volunteer) -> tuple[str, str, str]:
        """(name as the person's convention writes it, family name, given name), formal:
        a nickname the roster gives beside a name (`Margaret "Peggy"`) is not said."""
        family = formal_name(clean_name(volunteer.family_name))
        given = formal_name(clean_name(volunteer.given_name))
        return display_name(family, given, volunteer.locale), family, given

    def context(
        self,
        volunteer: Volunteer,
        names: tuple[str, ...] | None = None,
        *,
        reached: bool | None = None,
    ) -> dict[str, Any]:
        """The variables a template sees for this volunteer (`names` overrides the names;
        `reached`: see render)."""
        per_locale = self._per_locale.get(volunteer.locale)
        if per_locale is None:
            raise RenderError(
                f"{self.campaign.campaign_id} has no Reply-To or contact point for locale "
                f"{volunteer.locale!r}",
                file=self.campaign.path,
                hint="add the locale to the campaign's [reply_to], or leave it out of its audience",
            )
        context = {
            **self._shared,
            **per_locale,
            "subject": self.campaign.subject[volunteer.locale],
            **dict(zip(NAME_FIELDS, names or self.names(volunteer), strict=True)),
            # What differs by exposure is in a template of its own, named after it: no
            # template tests the exposure, so none can fall through to another's words.
            "wording_for": wording_template(self.campaign, volunteer.exposure),
            "data_held": volunteer.data_held,
        }
        if self.campaign.follows:
            context["earlier_notice_reached"] = self._reached(reached)
        return context

    def _reached(self, reached: bool | None) -> bool:
        if reached is None:
            raise RenderError(
                f"{self.campaign.campaign_id} follows {self.campaign.follows}: its wording "
                "depends on whether that notice reached the reader, and this render was "
                "not told",
                hint="pass reached= (the state of their earlier message is in the ledger)",
            )
        return reached

    def shape_key(self, volunteer: Volunteer, *, reached: bool | None = None) -> tuple[Any, ...]:
        """What the message depends on besides the names: people with equal keys get the
        same message but for their names."""
        return self._shape_key(volunteer, self.names(volunteer), reached)

    def _shape_key(
        self, volunteer: Volunteer, names: tuple[str, str, str], reached: bool | None
    ) -> tuple[Any, ...]:
        # Whether a name part is empty changes the message ("Dear Smith"), so it is shape.
        told = self._reached(reached) if self.campaign.follows else None
        return (volunteer.locale, volunteer.exposure, volunteer.data_held, told, *map(bool, names))

    def render(self, volunteer: Volunteer, *, reached: bool | None = None) -> RenderedMessage:
        """The message for `volunteer`. For a follow-up, `reached` says whether the notice
        it follows reached them (its message sent or delivered): the wording differs, and
        a render that is not told refuses rather than guess."""
        names = self.names(volunteer)
        key = self._shape_key(volunteer, names, reached)
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._render_shape(volunteer, reached)
            if len(self._shapes) >= MAX_SHAPES:
                self._shapes.clear()
            self._shapes[key] = shape
        if isinstance(shape, TemplateRenderError):
            raise TemplateRenderError(
                shape.detail,
                file=shape.file or "",
                line=shape.row,
                volunteer_id=volunteer.volunteer_id,
            )
        escaped = [str(escape(n)) for n in names]
        return RenderedMessage(
            campaign_id=self.campaign.campaign_id,
            volunteer_id=volunteer.volunteer_id,
            locale=volunteer.locale,
            subject=self.campaign.subject[volunteer.locale],
            # One pass each: a name is never scanned again, so it cannot fill a slot.
            text=_SLOTS.sub(lambda m: names[int(m.group(1))], shape.text),
            html=_SLOTS.sub(lambda m: escaped[int(m.group(1))], shape.html),
        )

    def _render_shape(
        self, volunteer: Volunteer, reached: bool | None
    ) -> _Shape | TemplateRenderError:
        text_template, html_template = self.templates(volunteer.locale)
        slots = tuple(_SLOT.format(i) for i in range(3))
        context = self.context(volunteer, slots, reached=reached)
        parts = []
        for template in (text_template, html_template):
            try:
                parts.append(template.render(context))
            except TEMPLATE_ERRORS as exc:
                return render_error(exc, self.campaign, template.name or "", volunteer)
        return _Shape(text=tidy_text(parts[0]), html=tidy_html(parts[1]))

    def render_blocks(
        self, volunteer: Volunteer, fmt: str, *, reached: bool | None = None
    ) -> tuple[str, dict[str, str]]:
        """The whole part in `fmt` and the output of each block in it, for `check`.

        Rendering the whole template first fills the context with every block of the
        inheritance chain, most derived first; each is then rendered on its own.
        """
        template = self.templates(volunteer.locale)[FORMATS.index(fmt)]
        context = template.new_context(self.context(volunteer, reached=reached))
        try:
            whole = "".join(template.root_render_func(context))
            blocks = {name: "".join(funcs[0](context)) for name, funcs in context.blocks.items()}
        except TEMPLATE_ERRORS as exc:
            raise render_error(exc, self.campaign, template.name or "", volunteer) from exc
        return whole, blocks
