"""Reading what a page's form posted: always through here, so no form is taken without
this session's CSRF token (tests/web/test_security.py posts to every POST route)."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request

from notifier.web.security import require_csrf

# A form of ours has a few fields; a body with more is not one of ours.
MAX_FIELDS = 200


async def posted_form(request: Request) -> FormData:
    """The form this request posted, once its CSRF token is checked (a refused token
    raises `Forbidden`: a 403 page)."""
    form = await request.form(max_fields=MAX_FIELDS)
    require_csrf(form, getattr(request.state, "csrf", None))
    return form


def text_field(form: FormData, name: str) -> str:
    """A text field's value ("" when missing or a file)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""
