"""The JSON Schemas of Every Eval Ever, vendored byte for byte from the `every-eval-ever` wheel (the package needs
Python 3.12 and heavy dependencies, so it is not a dependency of mcub), pinned by version and sha256, and validation
of documents against them."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any, Literal

from mcub.errors import McubError

EEE_PACKAGE = "every-eval-ever"
EEE_VERSION = "0.3.0"
"""The package version the schemas come from (its files every_eval_ever/schemas/*.json, with its LICENSE)."""
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SchemaName = Literal["eval.schema.json", "instance_level_eval.schema.json"]
SCHEMA_SHA256: dict[SchemaName, str] = {
    "eval.schema.json": "c9c6195aec8a9dfa0b2aba4924ac1aa8a184c9d8ca97cee778cb531088e39b48",
    "instance_level_eval.schema.json": "b16b7fa7f0aa32763444179d94ffb2336ddb12c3fd2903835fe491666c1ff3e6",
}
"""sha256 of each vendored file, as the wheel's RECORD lists it."""
AGGREGATE_SCHEMA: SchemaName = "eval.schema.json"
INSTANCE_SCHEMA: SchemaName = "instance_level_eval.schema.json"


class SchemaError(McubError):
    """A vendored schema file is not the pinned one, or a document does not validate against it."""


@cache
def load_schema(name: SchemaName) -> dict[str, Any]:
    """A vendored schema, after checking its bytes against the pinned sha256."""
    path = SCHEMA_DIR / name
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SCHEMA_SHA256[name]:
        raise SchemaError(f"{path}: sha256 {digest} is not the pinned {SCHEMA_SHA256[name]} of {EEE_PACKAGE} "
                          f"{EEE_VERSION}")  # fmt: skip
    return json.loads(data)


@cache
def _validator(name: SchemaName):
    from jsonschema import Draft7Validator

    return Draft7Validator(load_schema(name))


def schema_problems(document: dict[str, Any], name: SchemaName) -> list[str]:
    """Each way `document` breaks the schema, as `path: message` (empty: it validates)."""
    problems = sorted(_validator(name).iter_errors(document), key=lambda error: list(error.absolute_path))
    return [f"{error.json_path}: {error.message}" for error in problems]


def check_document(document: dict[str, Any], name: SchemaName, where: str) -> None:
    """Raise a SchemaError naming `where` and the first problems when `document` does not validate."""
    problems = schema_problems(document, name)
    if problems:
        raise SchemaError(f"{where}: not valid against {EEE_PACKAGE} {EEE_VERSION} {name}: {'; '.join(problems[:3])}")
