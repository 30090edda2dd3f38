"""Statistics releases (issue #14): numbered, immutable releases of the anonymised
statistics, one per closed period, with linked protection over everything ever published
(``protection``), kept in a ledger of their own (``releases``), exported as JSON, CSV and
XLSX with HXL hashtags (``exports``)."""
