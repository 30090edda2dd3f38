"""Pages for people, served by the API process (issue #20; ADR 20).

The shared base any set of pages builds on (a future console too): ``site`` (the layout
template, rendering, the pages' headers), ``i18n`` (gettext catalogues with Babel, the
language from the picker or ``Accept-Language``, a network's own words) and ``csrf`` (form
tokens that need no cookie). The complainants' pages are ``complainants``.

Here, not in a package of their own beside ``services/api``: the pages are another face of the
same public edge. They share its throttles, its receipt desk and its client address (an
import of ``services.api`` from elsewhere is forbidden, ADR 11), and they run in its process.
"""
