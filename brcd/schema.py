"""The config schema's side of the numeric rule, and its errors in words.

:func:`apply_numeric_rule` walks a config along the JSON schema and applies
:mod:`brcd.options`' rule where the schema asks for an integer, a number or
true/false (``16.0`` and ``"16"`` -> ``16``, ``"0.5"`` -> ``0.5``), so that
``--config 'bits=[16]'`` narrows a grid; the validator
(:func:`validator_class`) counts only finite numbers as numbers and fills in
defaults; :func:`error_message` names the key, the value and the allowed form
(:func:`describe`) of a schema failure instead of "is not valid under any of
the given schemas".
"""
from __future__ import annotations

import copy
import json
from typing import Any, Iterator

from brcd.options import finite_number, flag, range_text, whole_number

#: schema failures whose message says all there is (the key is named beside it)
_SELF_EXPLAINING = ("required", "additionalProperties", "unevaluatedProperties", "dependentRequired")


def resolve(schema: dict, root: dict) -> dict:
    """``schema`` with a local ``$ref`` (``#/$defs/...``) followed."""
    while isinstance(schema, dict) and "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _branches(schema: dict, root: dict) -> Iterator[dict]:
    """``schema`` and every branch of its ``oneOf``/``anyOf`` (followed down), resolved."""
    schema = resolve(schema, root)
    yield schema
    for key in ("oneOf", "anyOf"):
        for branch in schema.get(key, []):
            yield from _branches(branch, root)


def _wanted_types(schema: dict, root: dict) -> set[str]:
    types = set()
    for branch in _branches(schema, root):
        kind = branch.get("type")
        types.update([kind] if isinstance(kind, str) else kind or [])
    return types


def _scalar(value: Any, wanted: set[str]) -> Any:
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        return value
    if "boolean" in wanted and isinstance(value, str) and flag(value) is not None:
        return flag(value)
    if "integer" in wanted and (isinstance(value, str) or "number" not in wanted):
        number = whole_number(value)
        if number is not None:
            return number
    if "number" in wanted and isinstance(value, str):
        number = finite_number(value)
        if number is not None:
            return number
    return value


def _child_schemas(schema: dict, root: dict, kind: str) -> list[dict]:
    """The subschemas of ``schema``'s branches that apply to a mapping's values or a list's items."""
    return [branch for branch in _branches(schema, root) if kind in _wanted_types(branch, root)
            or (kind == "object" and ("properties" in branch or "additionalProperties" in branch))
            or (kind == "array" and "items" in branch)]


def apply_numeric_rule(instance: Any, schema: dict, root: dict | None = None) -> Any:
    """``instance`` with the numeric rule applied wherever ``schema`` wants a number (mappings and
    lists are changed in place, and returned)."""
    root = schema if root is None else root
    if isinstance(instance, dict):
        for branch in _child_schemas(schema, root, "object"):
            for key in list(instance):
                sub = branch.get("properties", {}).get(key, branch.get("additionalProperties"))
                if isinstance(sub, dict):
                    instance[key] = apply_numeric_rule(instance[key], sub, root)
        return instance
    if isinstance(instance, list):
        for branch in _child_schemas(schema, root, "array"):
            if isinstance(branch.get("items"), dict):
                instance[:] = [apply_numeric_rule(item, branch["items"], root) for item in instance]
        return instance
    return _scalar(instance, _wanted_types(schema, root))


def validator_class():
    """A Draft 2020-12 validator (as Snakemake uses) that fills in schema ``default`` values and whose
    numbers are finite (``.inf`` and ``.nan`` are not numbers of a config)."""
    import math

    from jsonschema import Draft202012Validator, validators

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, schema)

    base = Draft202012Validator.TYPE_CHECKER

    def finite(checker, instance):
        return base.is_type(instance, "number") and math.isfinite(instance)

    checker = base.redefine("number", finite).redefine(
        "integer", lambda checker, instance: base.is_type(instance, "integer") and finite(checker, instance))
    return validators.extend(Draft202012Validator, {"properties": set_defaults}, type_checker=checker)


# ----------------------------------------------------------------------------- errors in words


def _type_form(schema: dict, root: dict) -> str | None:
    kind = schema.get("type")
    low, high = schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum")
    bounds = range_text(low, high, "exclusiveMinimum" in schema)
    if kind == "integer":
        step = f", a multiple of {schema['multipleOf']}" if "multipleOf" in schema else ""
        return f"an integer{bounds}{step}"
    if kind == "number":
        return f"a finite number{bounds}"
    if kind == "boolean":
        return "true or false"
    if kind == "string" or "pattern" in schema:
        pattern = f" matching {schema['pattern']}" if "pattern" in schema else ""
        length = f" of at most {schema['maxLength']} characters" if "maxLength" in schema else ""
        return f"a string{pattern}{length}"
    if kind == "array":
        return _list_form(schema, root)
    if kind == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, dict) and "properties" not in schema:
            return f"a mapping of names to {_grouped(describe(values, root))}"
        return "a mapping"
    return None


def _list_form(schema: dict, root: dict) -> str:
    low, high = schema.get("minItems", 0), schema.get("maxItems")
    size = f"list of {low} " if low == high else "non-empty list of " if low >= 1 else "list of "
    distinct = "distinct " if schema.get("uniqueItems") else ""
    items = schema.get("items")
    each = f", each {_grouped(describe(items, root))}" if isinstance(items, dict) else ""
    return f"a {size}{distinct}values{each}"


def _grouped(form: str) -> str:
    """A nested form with alternatives in brackets, so that its ", or" cannot be read as the outer one's."""
    return f"({form})" if ", or " in form else form


def _bare_form(schema: dict, root: dict) -> str:
    branches = schema.get("oneOf") or schema.get("anyOf")
    if branches:
        return ", or ".join(describe(branch, root) for branch in branches)
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    if "const" in schema:
        return json.dumps(schema["const"])
    return _type_form(schema, root) or "a value"


def describe(schema: dict, root: dict) -> str:
    """The allowed form of ``schema`` in words: 'an integer >= 8, a multiple of 8', 'one of bank, online',
    with the schema's ``examples`` after it."""
    schema = resolve(schema, root)
    examples = [json.dumps(example, ensure_ascii=False).replace('"', "") for example in schema.get("examples", [])]
    return _bare_form(schema, root) + (f" (e.g. {' or '.join(examples)})" if examples else "")


def _applicable(errors: list) -> bool:
    """Whether a ``oneOf`` branch fits the value's type (its errors are about more than the type, or
    than not being the branch's fixed word)."""
    for error in errors:
        if error.relative_path:
            continue
        if error.validator in ("type", "const", "enum") or (error.validator in ("oneOf", "anyOf")
                                                             and not _fitting(error)):
            return False
    return True


def _fitting(error) -> list[list]:
    """The errors of each branch of a ``oneOf``/``anyOf`` failure that fits the value's type."""
    branches: dict[int, list] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    return [errors for errors in branches.values() if _applicable(errors)]


def _focus(error):
    """The failure to report: inside a ``oneOf``/``anyOf``, the one branch that fits the value's type."""
    while error.validator in ("oneOf", "anyOf"):
        fitting = _fitting(error)
        if len(fitting) != 1:
            break
        error = min(fitting[0], key=lambda e: len(e.relative_path))
    return error


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def error_message(error, root: dict) -> str:
    """'key `bits.0`: 12 is not a multiple of 8; allowed: an integer in [8, 4096], a multiple of 8'."""
    error = _focus(error)
    key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator in _SELF_EXPLAINING:
        return f"key `{key}`: {error.message}"
    form = describe(error.schema, root)
    if error.validator in ("oneOf", "anyOf", "type", "const", "enum"):
        return f"key `{key}`: {_shown(error.instance)} is not {form}"
    if error.validator in ("maxLength", "pattern"):
        return f"key `{key}`: {_shown(error.instance)} is not {form}"
    return f"key `{key}`: {error.message}; allowed: {form}"
