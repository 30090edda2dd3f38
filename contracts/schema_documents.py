"""How a msgspec Struct becomes a published JSON Schema document (draft 2020-12).

Every published schema has an ``$id`` (``schema_id``), which is also the ``dataschema``
attribute of the CloudEvents that follow it. Its root is the Struct itself, at the top of
the document (msgspec puts it in ``$defs`` behind a ``$ref``), and every ``$ref`` in it is a
local ``#/$defs/<Struct>``: the document resolves alone, whether a tool reads its ``$id`` or
ignores it. The AsyncAPI document (``contracts.asyncapi``) moves the same ``$defs`` into its
``components/schemas``.
"""

from __future__ import annotations

import inspect
from typing import Any, Final

import msgspec

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

SCHEMA_ID_PREFIX: Final = "urn:cbcm:schema:"
"""A URN rather than a URL: the network runs no web server that would answer at a schema's
URL, and an ``$id`` is a name, never something a validator should fetch."""

DEFS_REF: Final = "#/$defs/"


def schema_id(name: str) -> str:
    """The ``$id`` of the published JSON Schema ``name`` (and the ``dataschema`` of a
    CloudEvent of that type).

    >>> schema_id("org.psea.cbcm.case.received.v1")
    'urn:cbcm:schema:org.psea.cbcm.case.received.v1'
    """
    return SCHEMA_ID_PREFIX + name


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return {ref for item in node for ref in _refs(item)}
    return set()


def schema_document(generated: dict[str, Any], name: str) -> dict[str, Any]:
    """The published document of ``name`` from msgspec's schema of its Struct: the root
    inlined, docstrings dedented, with ``$schema``, ``$id`` and ``title``.

    Raises ``ValueError`` if a ``$ref`` would not resolve inside the document.
    """
    defs: dict[str, Any] = dict(generated.get("$defs", {}))
    root: dict[str, Any] = dict(generated)
    root.pop("$defs", None)
    if "$ref" in root:
        root_name = root.pop("$ref").removeprefix(DEFS_REF)
        root = {**defs.pop(root_name), **root}
    # msgspec copies docstrings verbatim; integrators read them without Python's indent.
    for key, definition in list(defs.items()):
        if "description" in definition:
            defs[key] = {**definition, "description": inspect.cleandoc(definition["description"])}
    description = inspect.cleandoc(root.pop("description", ""))
    root.pop("title", None)
    document: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_id(name),
        "title": name,
        "description": description,
        **root,
    }
    if defs:
        document["$defs"] = defs
    dangling = {ref for ref in _refs(document) if ref.removeprefix(DEFS_REF) not in defs}
    if dangling:
        raise ValueError(f"schema {name}: references that do not resolve: {sorted(dangling)}")
    return document


def struct_schema(struct: type[msgspec.Struct], name: str) -> dict[str, Any]:
    """The published JSON Schema document ``name`` of a Struct that is sent as it is (not in
    a CloudEvents envelope)."""
    return schema_document(msgspec.json.schema(struct), name)
