"""What the console-views pages (statistics, registry, audit, referrals, prevention) share:
who may open a page, reading a posted form into the API's own request schema, and running a
command of the application with its refusals told in words.

A form is checked as the API checks its body (the same pydantic schema, so the same bounds
and codes) and the command is the one the ``/v1`` route calls, with the actor the route
would choose; a refusal of the domain is shown on the page, a version conflict as a clear
"someone changed this meanwhile" message, never as a lost update.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from types import UnionType
from typing import Annotated, Any, Final, TypeVar, Union, get_args, get_origin
from uuid import UUID

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from domain.actors import Actor, Role
from domain.errors import ActionNotPermitted, DomainError, NotFound, VersionConflict
from services.api.auth import acting_as
from services.api.console.session import ConsoleRefusal, Staff, check_form, read_form
from services.api.console.site import reader_language
from services.api.pages.i18n import N_
from services.application.commands import Written
from services.application.mechanism import ComplaintMechanism

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

NO_SUCH_PAGE: Final = N_("There is no such page in the console.")
NOT_FOR_YOUR_ROLE: Final = N_("Your role may not open this page.")
NOT_FOR_YOUR_ROLE_ACTION: Final = N_("Your role may not do this. Nothing was recorded.")


class FormProblem(Exception):
    """A form that cannot be recorded: the message (already in the reader's language) and
    the status the page answers with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def role_in(staff: Staff, roles: Iterable[Role]) -> Actor:
    """The signed-in member acting in the first of ``roles`` they hold; a readable 403 page
    otherwise (as the API's ``require_role``)."""
    actor = acting_as(staff.principal, roles)
    if actor is None:
        raise ConsoleRefusal(403, NOT_FOR_YOUR_ROLE, staff)
    return actor


def matching(staff: Staff, value: str, pattern: str, message: str = NO_SUCH_PAGE) -> str:
    """``value`` (from the address) if it fits ``pattern``; else a readable 404 page, not the
    API's problem document."""
    if len(value) > 200 or re.fullmatch(pattern, value) is None:
        raise ConsoleRefusal(404, message, staff)
    return value


def uuid_of(staff: Staff, value: str, message: str = NO_SUCH_PAGE) -> UUID:
    """An id from the address, or a readable 404 page."""
    try:
        return UUID(value.strip()[:64])
    except ValueError:
        raise ConsoleRefusal(404, message, staff) from None


def holds(staff: Staff, roles: Iterable[Role]) -> bool:
    return acting_as(staff.principal, roles) is not None


def mechanism(request: Request) -> ComplaintMechanism:
    app: ComplaintMechanism = request.app.state.mechanism()
    return app


async def in_thread(call: Callable[[], T]) -> T:
    return await run_in_threadpool(call)


async def posted(request: Request, staff: Staff) -> dict[str, Any]:
    """The posted form, checked (its ``csrf`` field is the session's, it came from this
    site), each field a string or, when sent more than once, a list of strings."""
    form = await read_form(request)
    fields: dict[str, Any] = {}
    for key in form:
        values = form.getlist(key)
        fields[key] = values if len(values) > 1 else (values[0] if values else "")
    check_form(request, staff, {k: v for k, v in fields.items() if isinstance(v, str)})
    fields.pop("csrf", None)
    return fields


def as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    return [v for v in (value if isinstance(value, list) else [value]) if v != ""]


def _kinds(annotation: Any) -> set[Any]:
    """The plain types an annotation allows (``Count | None``: int and None)."""
    if get_origin(annotation) is Annotated:
        return _kinds(get_args(annotation)[0])
    args = get_args(annotation)
    if args and get_origin(annotation) in (Union, UnionType):
        return {k for a in args for k in _kinds(a)}
    return {annotation}


def _typed(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """A form sends text: whole numbers and flags are read as such for the fields the schema
    says are numbers or flags (the schema is strict about types, as the API's JSON is), an
    empty optional field as absent."""
    typed: dict[str, Any] = {}
    for name, value in data.items():
        info = model.model_fields.get(name)
        kinds = set() if info is None else _kinds(info.annotation)
        if isinstance(value, str) and value == "" and info is not None and not info.is_required():
            continue
        if (
            isinstance(value, str)
            and int in kinds
            and re.fullmatch(r"-?[0-9]{1,12}", value.strip())
        ):
            typed[name] = int(value.strip())
        elif isinstance(value, str) and bool in kinds:
            typed[name] = value.strip().lower() in ("on", "true", "1", "yes")
        else:
            typed[name] = value
    return typed


def parse(model: type[M], data: Mapping[str, Any], gettext: Callable[[str], str]) -> M:
    """``data`` checked as the API checks its body; ``FormProblem`` naming each field that
    is not right."""
    try:
        return model.model_validate(_typed(model, data))
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '-'}: {error['msg']}"
            for error in e.errors(include_url=False, include_context=False, include_input=False)
        )
        raise FormProblem(
            gettext("Please check the form: %(problems)s") % {"problems": problems}
        ) from None


async def record(
    request: Request,
    command: Callable[[ComplaintMechanism], Written],
    gettext: Callable[[str], str],
) -> Written:
    """Run ``command`` on the application (off the event loop); a refusal as a
    ``FormProblem`` in words."""
    app = mechanism(request)
    try:
        return await in_thread(lambda: command(app))
    except VersionConflict as e:
        raise FormProblem(
            gettext(
                "Someone else changed this while you had the page open (it is now at version "
                "%(version)s). Nothing was recorded: reload the page, check what changed, and "
                "send your change again."
            )
            % {"version": e.current},
            409,
        ) from None
    except ActionNotPermitted:
        raise FormProblem(gettext(NOT_FOR_YOUR_ROLE_ACTION), 403) from None
    except NotFound:
        raise FormProblem(gettext("Not found. Nothing was recorded."), 404) from None
    except DomainError as e:
        raise FormProblem(gettext("Not recorded: %(reason)s") % {"reason": str(e)}, 409) from None


def translations(request: Request, staff: Staff) -> Callable[[str], str]:
    """The reader's gettext (the same catalogue the page renders with)."""
    lang = reader_language(request, staff)
    gettext: Callable[[str], str] = request.app.state.console.catalogues.get(lang).gettext
    return gettext
