"""The base every page builds on: the layout, rendering in the reader's language, the
pages' security headers and form tokens (ADR 20). A future console reuses it with templates
of its own.

What the layout carries, for any phone and any connection: one HTML answer per page (the
style sheet is inline, named in the Content-Security-Policy by its hash), no script needed
(one small inline script makes the quick exit leave no page in the tab's history; without it
the exit is a plain link), nothing from another origin, and ``no-store`` (the edge sets it on
every answer).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from services.api.pages.csrf import FormGuard, FormToken, Verdict, same_site
from services.api.pages.i18n import BY_CODE, LANGUAGES, N_, Catalogues, negotiate

QUICK_EXIT_URL: Final = "https://www.google.com/search?q=weather"
"""Where the quick-exit button goes: a page that draws no attention on a shared screen."""


def _read(name: str) -> str:
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


STYLE: Final = _read("site.css").strip()
SCRIPT: Final = _read("quick-exit.js").strip()

PAGE_POLICY: Final = (
    f"default-src 'none'; style-src 'self' 'sha256-{_sha256(STYLE)}'; "
    f"script-src 'self' 'sha256-{_sha256(SCRIPT)}'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
"""Only this site: the inline style sheet and quick-exit script by their hashes, forms posted
back here, never framed. ``data:`` images for the empty favicon only (``<link rel="icon"
href="data:,">``): without it every browser asks for ``/favicon.ico``, one more round trip on
a slow connection."""


@dataclass(frozen=True)
class Reader:
    """Who a page is rendered for: their language and the client key forms are bound to."""

    lang: str
    client: str

    @property
    def rtl(self) -> bool:
        return BY_CODE[self.lang].rtl


class Site:
    def __init__(
        self,
        *,
        catalogues: Catalogues,
        guard: FormGuard,
        templates: jinja2.BaseLoader | None = None,
        name: str = N_("Report abuse safely"),
    ) -> None:
        self.catalogues = catalogues
        self.guard = guard
        self.name = name
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(
                [*([templates] if templates else []), jinja2.PackageLoader(__package__)]
            ),
            autoescape=True,
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def reader(self, request: Request, client: str, chosen: str | None = None) -> Reader:
        lang = negotiate(
            chosen if chosen is not None else request.query_params.get("lang"),
            request.headers.get("accept-language"),
        )
        return Reader(lang=lang, client=client)

    def token(self, form: str, reader: Reader) -> FormToken:
        return self.guard.issue(form, reader.client)

    def check_form(
        self,
        request: Request,
        form: str,
        reader: Reader,
        fields: Mapping[str, str],
        *,
        consume: bool,
    ) -> Verdict:
        headers = {k: v for k, v in request.headers.items() if k == "sec-fetch-site"}
        if not same_site(headers):
            return Verdict.CROSS_SITE
        token = FormToken(
            fields.get("form_nonce", ""), fields.get("form_issued", ""), fields.get("form_mac", "")
        )
        return self.guard.check(form, reader.client, token, consume=consume)

    def render(
        self,
        reader: Reader,
        template: str,
        *,
        status_code: int = 200,
        path: str = "/",
        **context: Any,
    ) -> HTMLResponse:
        translations = self.catalogues.get(reader.lang)
        page = self.env.get_template(template).render(
            gettext=translations.gettext,
            ngettext=translations.ngettext,
            _=translations.gettext,
            policy=lambda msgid: self.catalogues.policy_words(reader.lang, msgid),
            lang=reader.lang,
            dir="rtl" if reader.rtl else "ltr",
            languages=LANGUAGES,
            path=path,
            site_name=self.name,
            style=STYLE,  # our own files, named in the policy by their hashes
            script=SCRIPT,
            quick_exit=QUICK_EXIT_URL,
            **context,
        )
        return HTMLResponse(page, status_code=status_code)
