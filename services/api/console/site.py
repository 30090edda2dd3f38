"""The console's base: its layout, rendering in the reader's language, its navigation and
its own Content-Security-Policy (ADR 24).

Built on the complainants' pages' machinery (``services.api.pages``: the languages and their
negotiation, Babel's catalogues compiled in memory, the same-site check), with a catalogue
domain of its own, ``console`` (English is the source; French is complete; a network may put
``<CBCM_DATA_DIR>/locales/<lang>/console.po`` in front), and templates of its own under
``templates/console/``. Every module of the console renders through :func:`render` and adds
its menu entry to :data:`NAV` when it is imported.

The policy allows only this site: the inline style sheet by its hash, images from here or
``data:``, forms posted back here, no script at all, never framed. Every answer is
``no-store`` (the edge's rule for every answer, checked again here).
"""

from __future__ import annotations

import base64
import functools
import gettext
import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Final

import jinja2
from babel.dates import format_datetime
from fastapi import Request
from fastapi.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.actors import Role
from services.api.console.session import PREFIX, Staff
from services.api.pages.i18n import (
    BY_CODE,
    ENGLISH,
    N_,
    catalogue_path,
    compile_catalogue,
    negotiate,
    read_catalogue,
)

DOMAIN: Final = "console"
LOCALES_DIR: Final = Path(__file__).parent / "locales"
LANGUAGES: Final = tuple(BY_CODE[code] for code in ("en", "fr"))
"""The console's languages (English and French complete to start; ADR 24)."""
CODES: Final = tuple(language.code for language in LANGUAGES)


def _read(name: str) -> str:
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


STYLE: Final = _read("console.css").strip()

CONSOLE_POLICY: Final = (
    f"default-src 'none'; style-src 'sha256-{_sha256(STYLE)}'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""No script, nothing from elsewhere, forms only back here, never framed. Charts are inline
SVG (presentation attributes, no ``style=``); downloads are plain links."""


NAV: list[tuple[str, str, Iterable[Role]]] = []
"""The console's menu: ``(path, label, roles)``; each module appends its own entry at import
(label marked with ``N_``; the layout shows an entry to the roles it names)."""


@functools.cache
def _shipped(lang: str) -> gettext.NullTranslations:
    path = catalogue_path(LOCALES_DIR, lang, DOMAIN)
    if lang == ENGLISH or not path.exists():
        return gettext.NullTranslations()
    return compile_catalogue(read_catalogue(path, lang, DOMAIN))


class ConsoleCatalogues:
    """The console's translations per language, a network's own file in front."""

    def __init__(self, overrides: Path | None = None) -> None:
        self._translations: dict[str, gettext.NullTranslations] = {}
        for lang in CODES:
            translations = _shipped(lang)
            own = None if overrides is None else overrides / lang / f"{DOMAIN}.po"
            if own is not None and own.exists():
                network = compile_catalogue(read_catalogue(own, lang, DOMAIN))
                network.add_fallback(translations)
                translations = network
            self._translations[lang] = translations

    def get(self, lang: str) -> gettext.NullTranslations:
        return self._translations.get(lang, self._translations[ENGLISH])


def console_language(requested: str | None, accept_language: str | None) -> str:
    """The reader's language among the console's: the choice, else the browser's, else
    English."""
    lang = negotiate(requested, accept_language)
    return lang if lang in CODES else ENGLISH


class ConsoleSite:
    def __init__(self, catalogues: ConsoleCatalogues) -> None:
        self.catalogues = catalogues
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader(__package__),
            autoescape=True,
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
        )


def visible_nav(staff: Staff | None) -> list[tuple[str, str]]:
    if staff is None:
        return []
    return [
        (path, label)
        for path, label, roles in NAV
        if any(role in staff.principal.roles for role in roles)
    ]


def reader_language(request: Request, staff: Staff | None) -> str:
    if staff is not None:
        return staff.lang if staff.lang in CODES else ENGLISH
    return console_language(
        request.query_params.get("lang"), request.headers.get("accept-language")
    )


def render(
    request: Request,
    staff: Staff | None,
    template: str,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A console page in the reader's language (the session's; before sign-in the picker's
    or the browser's), with the menu their roles may use and their form token as ``csrf``."""
    site: ConsoleSite = request.app.state.console
    lang = reader_language(request, staff)
    translations = site.catalogues.get(lang)

    def when(moment: datetime | str | None) -> str:
        if moment is None or moment == "":
            return ""
        if isinstance(moment, str):
            moment = datetime.fromisoformat(moment)
        # in UTC, saying so: staff of one network work across time zones
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        return format_datetime(moment, "d MMM y, HH:mm 'UTC'", tzinfo=UTC, locale=lang)

    def word(code: object) -> str:
        text = str(code)
        return translations.gettext(CODE_WORDS[text]) if text in CODE_WORDS else text

    message_text = ""
    if context.get("message"):
        arguments = {
            key: ", ".join(translations.gettext(item) for item in value)
            if isinstance(value, list)
            else value
            for key, value in (context.get("message_args") or {}).items()
        }
        message_text = translations.gettext(context["message"])
        if arguments:
            message_text = message_text % arguments
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    page = site.env.get_template(template).render(
        gettext=translations.gettext,
        ngettext=translations.ngettext,
        _=translations.gettext,
        when=when,
        word=word,
        N_=N_,
        message_text=message_text,
        lang=lang,
        dir="ltr",
        languages=LANGUAGES,
        path=request.url.path,
        here=here,
        staff=staff,
        csrf="" if staff is None else staff.csrf,
        nav=visible_nav(staff),
        style=STYLE,
        roles={role.value: label for role, label in ROLE_NAMES.items()},
        console=PREFIX,
        **context,
    )
    return HTMLResponse(page, status_code=status_code, headers={"Cache-Control": "no-store"})


ROLE_NAMES: Final = {
    Role.FOCAL_POINT: N_("Focal point"),
    Role.COORDINATOR: N_("PSEA coordinator"),
    Role.INVESTIGATING_ENTITY: N_("Investigating entity"),
    Role.SERVICE_PROVIDER: N_("Service provider"),
    Role.AUDITOR: N_("Auditor"),
    Role.INTAKE_OPERATOR: N_("Intake operator"),
    Role.INTAKE_SERVICE: N_("Intake service"),
    Role.STATISTICS_READER: N_("Statistics reader"),
}


class ConsoleHeaders:
    """The console's Content-Security-Policy and ``no-store`` on every answer under
    ``/console`` (outside the edge's ``SecurityHeaders``, which gives every other path its
    policy: mounted after it, this one has the last word on the console's paths)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(f"{PREFIX}/"):
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"content-security-policy", b"cache-control")
                ]
                headers.append((b"content-security-policy", CONSOLE_POLICY.encode()))
                headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)


CODE_WORDS: Final = {
    # statuses
    "under_preliminary_assessment": N_("Under preliminary assessment"),
    "referred_pending_investigation": N_("Referred, pending investigation"),
    "under_investigation": N_("Under investigation"),
    "substantiated": N_("Substantiated"),
    "not_substantiated": N_("Not substantiated"),
    "closed_other_reasons": N_("Closed for other reasons"),
    # the inbox's next actions
    "assess": N_("Assess"),
    "offer_assistance": N_("Offer assistance"),
    "refer_for_investigation": N_("Refer for investigation"),
    "chase_acknowledgement": N_("Chase the acknowledgement"),
    "give_feedback": N_("Give feedback"),
    "close": N_("Close"),
    # categories
    "sea_allegation": N_("SEA allegation"),
    "other_sensitive": N_("Other sensitive complaint"),
    "non_sensitive_feedback": N_("Non-sensitive feedback"),
    "sexual_exploitation": N_("Sexual exploitation"),
    "sexual_abuse": N_("Sexual abuse"),
    "other": N_("Other"),
    "unknown": N_("Unknown"),
    "transactional_sex": N_("Transactional sex"),
    "exploitative_relationship": N_("Exploitative relationship"),
    "solicitation": N_("Solicitation"),
    "rape": N_("Rape"),
    "sexual_assault": N_("Sexual assault"),
    "sexual_activity_with_child": N_("Sexual activity with a child"),
    "un_staff": N_("UN staff"),
    "un_related_personnel": N_("UN related personnel"),
    "implementing_partner_personnel": N_("Implementing partner personnel"),
    "female": N_("Female"),
    "male": N_("Male"),
    "0-11": N_("0-11 years"),
    "12-17": N_("12-17 years"),
    "18+": N_("18 years or more"),
    "unknown_child": N_("Unknown age, a child"),
    # channels and people
    "hotline": N_("Hotline"),
    "sms_messaging": N_("SMS or messaging"),
    "complaint_box": N_("Complaint box"),
    "in_person": N_("In person"),
    "email": N_("E-mail"),
    "web_form": N_("Web form"),
    "community_leader": N_("Community leader"),
    "staff_mandatory_report": N_("Staff member's mandatory report"),
    "interagency_referral": N_("Referral from another agency's mechanism"),
    "survivor": N_("Survivor"),
    "witness": N_("Witness"),
    "staff_member": N_("Staff member"),
    "anonymous": N_("Anonymous"),
    "complainant": N_("Complainant"),
    "alleged_perpetrator": N_("Alleged perpetrator"),
    "case": N_("Notes staff wrote about the case"),
    # consents and sharing
    "assistance_referral": N_("Referral for assistance"),
    "identity_disclosure": N_("Disclosure of identity for investigation"),
    "contact": N_("Being contacted"),
    "caregiver_best_interest": N_("Caregiver, in the child's best interest"),
    "phone": N_("Phone"),
    "sms": N_("SMS"),
    "through_trusted_person": N_("Through a trusted person"),
    "receipt_code": N_("Receipt code (anonymous complainant)"),
    "allegation_summary": N_("Allegation summary"),
    "narrative": N_("Narrative"),
    "survivor_identity": N_("Survivor's identity"),
    "complainant_identity": N_("Complainant's identity"),
    "contact_details": N_("Contact details"),
    "alleged_perpetrator_details": N_("Alleged perpetrator details"),
    # transfers, outcomes, closure, erasure
    "implicated_agency_custody": N_("The implicated agency takes custody"),
    "received_by_wrong_agency": N_("Received by the wrong agency"),
    "area_of_responsibility": N_("Area of responsibility"),
    "capacity": N_("Capacity"),
    "investigation_concluded": N_("Investigation concluded"),
    "referred_to_agency_procedure": N_("Referred to the agency's own procedure"),
    "referred_to_feedback_mechanism": N_("Referred to the feedback mechanism"),
    "duplicate": N_("Duplicate"),
    "insufficient_information": N_("Insufficient information"),
    "complainant_withdrew": N_("The complainant withdrew"),
    "not_within_mandate": N_("Not within the mandate"),
    "survivor_request": N_("The survivor's request"),
    "complainant_request": N_("The complainant's request"),
    "network_decision": N_("A network decision"),
    "retention_expired": N_("Retention period over"),
    # services and referrals
    "medical": N_("Medical"),
    "psychosocial": N_("Psychosocial"),
    "legal": N_("Legal"),
    "material": N_("Material"),
    "safety_protection": N_("Safety and protection"),
    "livelihood": N_("Livelihood"),
    "education": N_("Education"),
    "child_born_of_sea": N_("Support for a child born of SEA"),
    "referred": N_("Referred"),
    "accepted": N_("Accepted"),
    "declined_by_provider": N_("Declined by the provider"),
    "declined_by_survivor": N_("Declined by the survivor"),
    "delivered": N_("Delivered"),
    "followed_up": N_("Followed up"),
}
"""Codes of the domain's vocabulary in words (translated when shown); a code missing here is
shown as it is."""
