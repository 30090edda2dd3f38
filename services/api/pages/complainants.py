"""The complainants' pages (issue #20): report a concern, get a receipt code, follow up with
it, and give non-sensitive feedback. Server-rendered, no script needed, no cookie.

Every post carries a form token (``csrf``) and counts against the same per-client limits as
the JSON endpoints (``routes.public``): a complaint or feedback against the intake limit, a
look-up against the receipt throttle. The receipt code travels only in a post's body, never
in a URL. Bad input gets the form back with what was typed and a message in the page's
language; nothing is recorded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, NoReturn
from urllib.parse import parse_qs

from babel.dates import format_date
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from domain.actors import Actor, Role
from domain.errors import DomainError
from domain.personal_data import PersonDetails
from domain.vocabulary import Channel, ComplainantRole, FeedbackCategory, Sector
from services.api.pages.csrf import Verdict
from services.api.pages.i18n import N_, feedback_words
from services.api.pages.site import Reader, Site
from services.api.routes.public import (
    WEB_FORM_USER,
    IntakeThrottled,
    LookupThrottled,
    NoSuchReceipt,
    ReceiptDesk,
    client_of,
    receive_public_complaint,
)
from services.api.throttle import ThrottleUnavailable
from services.api.writes import in_thread, mechanism, now
from services.event_store.errors import EventStoreUnavailable

PAGES: Final = frozenset({"/", "/report", "/follow-up", "/feedback"})
"""The paths the pages answer on (the edge gives them the pages' Content-Security-Policy)."""

LONG_TEXT: Final = 20_000
SHORT_TEXT: Final = 2_000
MAX_FIELDS: Final = 32

ROLES: Final = (
    (ComplainantRole.ANONYMOUS, N_("I prefer not to say")),
    (ComplainantRole.SURVIVOR, N_("It happened to me")),
    (ComplainantRole.WITNESS, N_("I saw it or heard about it")),
    (ComplainantRole.STAFF_MEMBER, N_("I work for an aid organisation")),
    (ComplainantRole.OTHER, N_("Someone else")),
)
CATEGORIES: Final = (
    (FeedbackCategory.INFORMATION_REQUEST, N_("A question or a request for information")),
    (FeedbackCategory.SERVICE_COMPLAINT, N_("A complaint about a service")),
    (FeedbackCategory.SUGGESTION, N_("A suggestion")),
    (FeedbackCategory.APPRECIATION, N_("Thanks or appreciation")),
    (FeedbackCategory.OTHER, N_("Something else")),
)
SECTORS: Final = (
    (Sector.FOOD_SECURITY, N_("Food")),
    (Sector.WASH, N_("Water, sanitation and hygiene")),
    (Sector.SHELTER, N_("Shelter")),
    (Sector.HEALTH, N_("Health")),
    (Sector.NUTRITION, N_("Nutrition")),
    (Sector.EDUCATION, N_("Education")),
    (Sector.CASH, N_("Cash assistance")),
    (Sector.PROTECTION, N_("Protection")),
    (Sector.CAMP_MANAGEMENT, N_("Camp management")),
    (Sector.LIVELIHOODS, N_("Livelihoods")),
    (Sector.LOGISTICS, N_("Logistics")),
    (Sector.OTHER, N_("Something else")),
)

TOO_LONG: Final = N_("This is too long: please shorten it.")
SENT_TOO_MANY: Final = N_(
    "Many reports were sent from your connection. Nothing was recorded this time: please try "
    "again later."
)
NOT_NOW: Final = N_("The service cannot take requests right now. Nothing was recorded.")
NOT_ACCEPTED: Final = N_("Something in the form could not be accepted. Nothing was recorded.")


class PageAnswer(Exception):
    """Stops a page's handling with this answer (a message page, a form with errors)."""

    def __init__(self, response: HTMLResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass
class PageContext:
    site: Site
    reader: Reader
    gettext: Callable[[str], str]

    def message(
        self, status: int, title: str, message: str, back: str | None = None, **headers: str
    ) -> NoReturn:
        response = self.site.render(
            self.reader,
            "complainants/message.html",
            status_code=status,
            title=self.gettext(title),
            message=self.gettext(message),
            back=back,
            page="",
        )
        response.headers.update(headers)
        raise PageAnswer(response)


async def _fields(request: Request) -> dict[str, str]:
    """A form post's fields (first value of each); anything but a form is no form."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        parsed = parse_qs(body, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        return {}
    return {name: values[0] for name, values in parsed.items()}


async def _agencies(request: Request) -> list[tuple[str, str]]:
    """The agencies a complainant may choose (none when the network configured one)."""
    if request.app.state.pages_agency:
        return []
    app = mechanism(request)
    network = await in_thread(app.network)
    return sorted(((a.code, a.name) for a in network.agencies.values()), key=lambda a: a[1])


router = APIRouter(include_in_schema=False)


def context(request: Request, chosen: str | None = None) -> PageContext:
    site: Site = request.app.state.pages
    reader = site.reader(request, client_of(request), chosen)
    return PageContext(site, reader, site.catalogues.get(reader.lang).gettext)


async def report_form(
    request: Request,
    page: PageContext,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    return page.site.render(
        page.reader,
        "complainants/report.html",
        status_code=status,
        path="/",
        page="report",
        token=page.site.token("report", page.reader),
        agencies=await _agencies(request),
        roles=[(role.value, page.gettext(label)) for role, label in ROLES],
        values={"role": "anonymous", "receipt": "yes", **(values or {})},
        errors=errors or {},
    )


def guarded(
    request: Request, page: PageContext, form: str, fields: dict[str, str], *, consume: bool
) -> Verdict:
    verdict = page.site.check_form(request, form, page.reader, fields, consume=consume)
    if verdict is Verdict.CROSS_SITE:
        page.message(
            403,
            N_("This form was not sent from this site"),
            N_("For your safety, forms are accepted only from this site's own pages."),
            back="/",
        )
    return verdict


async def _answer_form(
    request: Request,
    handle: Callable[[Request, PageContext, dict[str, str]], Awaitable[HTMLResponse]],
) -> HTMLResponse:
    """A posted form, answered by ``handle``: the page it raises (``PageAnswer``) is the
    answer too, and a store or throttle out of reach (or a network not set up yet) gives
    the "try again later" page."""
    fields = await _fields(request)
    page = context(request, fields.get("lang"))
    try:
        return await handle(request, page, fields)
    except PageAnswer as answer:
        return answer.response
    except (EventStoreUnavailable, ThrottleUnavailable, DomainError):
        return unavailable(page)


TOKEN_ERROR: Final = N_(
    "This form was open too long or could not be checked. Check what you wrote and send it again."
)


@router.get("/", response_class=HTMLResponse)
@router.get("/report", response_class=HTMLResponse)
async def report(request: Request) -> HTMLResponse:
    page = context(request)
    try:
        return await report_form(request, page)
    except (EventStoreUnavailable, ThrottleUnavailable, DomainError):
        return unavailable(page)


def unavailable(page: PageContext) -> HTMLResponse:
    """The event store or the throttle store cannot be reached, or the network is not set up
    yet (no agency to send to): a page saying so, in the reader's language, not JSON."""
    try:
        page.message(
            503,
            N_("Please try again later"),
            N_("The service cannot take requests right now. Nothing was recorded."),
            **{"Retry-After": "30"},
        )
    except PageAnswer as answer:
        return answer.response


@router.post("/report", response_class=HTMLResponse)
async def send_report(request: Request) -> HTMLResponse:
    return await _answer_form(request, _send_report)


async def _send_report(request: Request, page: PageContext, fields: dict[str, str]) -> HTMLResponse:
    _ = page.gettext
    values = {
        name: fields.get(name, "")
        for name in ("agency", "what", "where", "when", "danger", "role", "name", "phone")
    }
    values["email"] = fields.get("email", "")
    values["receipt"] = "yes" if fields.get("receipt") == "yes" else ""
    verdict = guarded(request, page, "report", fields, consume=False)
    errors: dict[str, str] = {}
    if verdict is not Verdict.OK:
        errors["form"] = _(TOKEN_ERROR)
    what = values["what"].strip()
    if not what:
        errors["what"] = _("Please tell us what happened.")
    elif len(what) > LONG_TEXT:
        errors["what"] = _(TOO_LONG)
    for name in ("where", "when"):
        if len(values[name]) > SHORT_TEXT:
            errors[name] = _(TOO_LONG)
    contact = {name: values[name].strip() for name in ("name", "phone", "email")}
    if any(len(value) > SHORT_TEXT for value in contact.values()):
        errors["contact"] = _(TOO_LONG)
    roles = {role.value for role, _label in ROLES}
    role = values["role"] if values["role"] in roles else ""
    if not role:
        errors["role"] = _("Please choose who you are (or that you prefer not to say).")
    elif role == ComplainantRole.ANONYMOUS and any(contact.values()):
        errors["contact"] = _(
            "To stay anonymous, leave the contact details empty; to be contacted, say "
            "who you are above."
        )
    agency = request.app.state.pages_agency or values["agency"]
    if not request.app.state.pages_agency and agency not in dict(await _agencies(request)):
        errors["agency"] = _("Please choose an organisation from the list.")
    if errors:
        return await report_form(request, page, values=values, errors=errors, status=422)
    if guarded(request, page, "report", fields, consume=True) is Verdict.USED:
        page.message(
            409,
            N_("This form was already sent"),
            N_("Your complaint was already received. It was not recorded a second time."),
            back="/",
        )
    narrative = what
    for label, name in (("Where", "where"), ("When", "when")):
        if values[name].strip():
            narrative += f"\n\n{label}: {values[name].strip()}"
    # "I do not know" does not raise the urgent flag, but the focal point reads the answer
    danger_answer = {"yes": "yes", "no": "no"}.get(values["danger"], "does not know")
    narrative += f"\n\nSomeone in danger now: {danger_answer}"
    narrative += f"\n\n(Reported on the web form, in language: {page.reader.lang})"
    details = (
        PersonDetails(
            name=contact["name"] or None,
            phone=contact["phone"] or None,
            email=contact["email"] or None,
        )
        if any(contact.values())
        else None
    )
    danger = values["danger"] == "yes"
    try:
        code = await receive_public_complaint(
            request,
            agency=agency,
            narrative=narrative,
            complainant_role=ComplainantRole(role),
            immediate_safety_risk=danger,
            complainant=details,
            with_receipt=bool(values["receipt"]),
        )
    except IntakeThrottled as refused:
        # the form comes back with what was typed: nothing the person wrote is lost
        answer = await report_form(
            request, page, values=values, errors={"form": _(SENT_TOO_MANY)}, status=429
        )
        answer.headers["Retry-After"] = str(refused.retry_after)
        return answer
    except (EventStoreUnavailable, ThrottleUnavailable):
        return await report_form(
            request, page, values=values, errors={"form": _(NOT_NOW)}, status=503
        )
    except DomainError:
        return await report_form(
            request, page, values=values, errors={"form": _(NOT_ACCEPTED)}, status=422
        )
    return page.site.render(
        page.reader,
        "complainants/received.html",
        path="/",
        page="",
        code=None if code is None else str(code),
        danger=danger,
    )


@router.get("/follow-up", response_class=HTMLResponse)
async def follow_up(request: Request) -> HTMLResponse:
    page = context(request)
    return follow_up_form(page)


def follow_up_form(
    page: PageContext, *, errors: dict[str, str] | None = None, status: int = 200
) -> HTMLResponse:
    return page.site.render(
        page.reader,
        "complainants/follow_up.html",
        status_code=status,
        path="/follow-up",
        page="follow-up",
        token=page.site.token("follow-up", page.reader),
        errors=errors or {},
    )


@router.post("/follow-up", response_class=HTMLResponse)
async def look_up(request: Request) -> HTMLResponse:
    return await _answer_form(request, _look_up)


async def _look_up(request: Request, page: PageContext, fields: dict[str, str]) -> HTMLResponse:
    _ = page.gettext
    # a look-up records nothing: its token is checked, not used up (a reload repeats it)
    if guarded(request, page, "follow-up", fields, consume=False) is not Verdict.OK:
        return follow_up_form(page, errors={"form": _(TOKEN_ERROR)}, status=400)
    text = fields.get("code", "").strip()
    if not text:
        return follow_up_form(page, errors={"code": _("Please enter your code.")}, status=422)
    desk: ReceiptDesk = request.app.state.receipts
    try:
        answer = await desk.look_up(
            mechanism(request), page.reader.client, text, request.app.state.metrics
        )
    except LookupThrottled as refused:
        page.message(
            429,
            N_("Please wait before trying again"),
            N_(
                "Too many codes that did not match were tried from your connection. "
                "Please try again later."
            ),
            back="/follow-up",
            **{"Retry-After": str(refused.retry_after)},
        )
    except NoSuchReceipt:
        return follow_up_form(
            page,
            errors={
                "code": _("We found no complaint with this code. Check the code and try again.")
            },
            status=404,
        )
    catalogues = page.site.catalogues
    lang = page.reader.lang
    return page.site.render(
        page.reader,
        "complainants/status.html",
        path="/follow-up",
        page="follow-up",
        status=catalogues.policy_words(lang, f"status.{answer.status}"),
        received_on=format_date(answer.received_on, format="long", locale=lang),
        feedback=[
            {
                "given_on": format_date(item.given_on, format="long", locale=lang),
                "message": feedback_words(item.message, lang, catalogues),
            }
            for item in answer.feedback
        ],
    )


def feedback_form(
    page: PageContext,
    *,
    agencies: list[tuple[str, str]],
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    return page.site.render(
        page.reader,
        "complainants/feedback.html",
        status_code=status,
        path="/feedback",
        page="feedback",
        token=page.site.token("feedback", page.reader),
        agencies=agencies,
        categories=[(c.value, page.gettext(label)) for c, label in CATEGORIES],
        sectors=[(s.value, page.gettext(label)) for s, label in SECTORS],
        values={"category": "", "sector": "", "agency": "", "text": "", **(values or {})},
        errors=errors or {},
    )


@router.get("/feedback", response_class=HTMLResponse)
async def feedback(request: Request) -> HTMLResponse:
    page = context(request)
    try:
        return feedback_form(page, agencies=await _agencies(request))
    except (EventStoreUnavailable, ThrottleUnavailable, DomainError):
        return unavailable(page)


@router.post("/feedback", response_class=HTMLResponse)
async def send_feedback(request: Request) -> HTMLResponse:
    return await _answer_form(request, _send_feedback)


async def _send_feedback(
    request: Request, page: PageContext, fields: dict[str, str]
) -> HTMLResponse:
    _ = page.gettext
    values = {name: fields.get(name, "") for name in ("agency", "category", "sector", "text")}
    agencies = await _agencies(request)
    errors: dict[str, str] = {}
    if guarded(request, page, "feedback", fields, consume=False) is not Verdict.OK:
        errors["form"] = _(TOKEN_ERROR)
    text = values["text"].strip()
    if not text:
        errors["text"] = _("Please write your feedback.")
    elif len(text) > LONG_TEXT:
        errors["text"] = _(TOO_LONG)
    if values["category"] not in {c.value for c, _label in CATEGORIES}:
        errors["category"] = _("Please choose what kind of feedback it is.")
    if values["sector"] not in {s.value for s, _label in SECTORS}:
        errors["sector"] = _("Please choose what it is about.")
    agency = request.app.state.pages_agency or values["agency"]
    if not request.app.state.pages_agency and agency not in dict(agencies):
        errors["agency"] = _("Please choose an organisation from the list.")
    if errors:
        return feedback_form(page, agencies=agencies, values=values, errors=errors, status=422)
    if guarded(request, page, "feedback", fields, consume=True) is Verdict.USED:
        page.message(
            409,
            N_("This form was already sent"),
            N_("Your feedback was already received. It was not recorded a second time."),
            back="/feedback",
        )
    desk: ReceiptDesk = request.app.state.receipts
    refusal = await in_thread(lambda: desk.intake_limit.hit(page.reader.client))
    if refusal is not None:
        answer = feedback_form(
            page,
            agencies=agencies,
            values=values,
            errors={"form": _(SENT_TOO_MANY)},
            status=429,
        )
        answer.headers["Retry-After"] = str(refusal.retry_after)
        return answer
    app = mechanism(request)
    actor = Actor(WEB_FORM_USER, agency, Role.INTAKE_OPERATOR)
    try:
        await in_thread(
            lambda: app.receive_feedback(
                actor=actor,
                channel=Channel.WEB_FORM,
                category=FeedbackCategory(values["category"]),
                sector=Sector(values["sector"]),
                concerned_agency=agency,
                text=text,
                at=now(),
            )
        )
    except (EventStoreUnavailable, ThrottleUnavailable):
        return feedback_form(
            page, agencies=agencies, values=values, errors={"form": _(NOT_NOW)}, status=503
        )
    except DomainError:
        return feedback_form(
            page, agencies=agencies, values=values, errors={"form": _(NOT_ACCEPTED)}, status=422
        )
    return page.site.render(page.reader, "complainants/thanks.html", path="/feedback", page="")
