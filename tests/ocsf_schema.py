"""An OCSF event checked against the OCSF schema itself, as shipped by the `pydantic-ocsf` package (its JSON copy of
the schema repository): the class's attributes merged along `extends`, each attribute typed by the dictionary,
objects checked the same way down to their leaves. The tests validate every exported event with it."""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

_SCALARS: dict[str, tuple[type, ...]] = {
    "integer_t": (int,),
    "long_t": (int,),
    "float_t": (int, float),
    "boolean_t": (bool,),
    "string_t": (str,),
    "json_t": (object,),
}


def _schema_file(version: str) -> Path:
    spec = importlib.util.find_spec("ocsf")
    assert spec is not None and spec.submodule_search_locations, "pydantic-ocsf is not installed (a dev dependency)"
    return Path(next(iter(spec.submodule_search_locations))) / "schemas" / f"v{version.replace('.', '_')}.json"


class OcsfSchema:
    """One OCSF version's classes, objects and dictionary, as the schema repository defines them."""

    def __init__(self, version: str) -> None:
        self.version = version
        data = json.loads(_schema_file(version).read_text(encoding="utf-8"))
        assert data["version"] == version
        self.events: dict[str, Any] = data["events"]
        self.objects: dict[str, Any] = data["objects"]
        self.dictionary: dict[str, Any] = data["dictionary"]["attributes"]
        self.types: dict[str, Any] = data["dictionary"]["types"]["attributes"]
        categories = data["categories_meta"]["attributes"]
        self.classes: dict[int, str] = {0: "base_event"}
        for name, event in self.events.items():
            category, parent = event.get("category"), event
            while category is None and parent.get("extends"):  # a class takes its category from what it extends
                parent = self.events[parent["extends"]]
                category = parent.get("category")
            if "uid" in event and category in categories:
                self.classes[categories[category]["uid"] * 1000 + event["uid"]] = name

    @cache  # noqa: B019 # one schema object lives for the test session
    def _merged(self, table: str, name: str) -> tuple[dict[str, dict[str, Any]], list[list[str]]]:
        """Attributes (name -> definition) along the `extends` chain, and the `at_least_one` constraints."""
        entries = self.events if table == "events" else self.objects
        chain = []
        while name:
            chain.append(entries[name])
            name = entries[name].get("extends", "")
        attributes: dict[str, dict[str, Any]] = {}
        at_least_one = []
        for entry in reversed(chain):
            for key, value in entry.get("attributes", {}).items():
                if not key.startswith("$") and isinstance(value, dict):
                    merged = {**self.dictionary.get(key, {}), **attributes.get(key, {})}
                    own = {k: v for k, v in value.items() if v is not None}
                    if "enum" in merged and "enum" in own:  # a class adds to an enum (0 Unknown, 99 Other stay)
                        own["enum"] = {**merged["enum"], **own["enum"]}
                    attributes[key] = {**merged, **own}
            if "at_least_one" in entry.get("constraints", {}):
                at_least_one = [entry["constraints"]["at_least_one"]]
        return attributes, at_least_one

    def problems(self, event: dict[str, Any]) -> list[str]:
        """Everything about `event` that its class does not allow; an empty list when it is a valid event."""
        class_uid = event.get("class_uid")
        name = self.classes.get(class_uid) if isinstance(class_uid, int) else None
        if name is None:
            return [f"class_uid {class_uid!r} is no OCSF {self.version} class"]
        attributes, _ = self._merged("events", name)
        found = []
        expected_category = class_uid // 1000
        if event.get("category_uid") != expected_category:
            found.append(f"category_uid {event.get('category_uid')!r}: class {class_uid} is in {expected_category}")
        if event.get("type_uid") != class_uid * 100 + (event.get("activity_id") or 0):
            found.append(f"type_uid {event.get('type_uid')!r} is not class_uid * 100 + activity_id")
        metadata = event.get("metadata")
        if not (isinstance(metadata, dict) and metadata.get("version") == self.version):
            found.append(f"metadata.version is not {self.version}")
        return found + self._check(attributes, [], event, name)

    def _check(
        self, attributes: dict[str, Any], at_least_one: list[list[str]], value: dict[str, Any], where: str
    ) -> list[str]:
        found = [
            f"{where}.{key}: required, missing"
            for key, spec in attributes.items()
            if spec.get("requirement") == "required" and key not in value
        ]
        found += [
            f"{where}: needs at least one of {', '.join(group)}"
            for group in at_least_one
            if not any(key in value for key in group)
        ]
        for key, item in value.items():
            spec = attributes.get(key)
            if spec is None:
                found.append(f"{where}.{key}: not an attribute of {where}")
                continue
            items = item if spec.get("is_array") else [item]
            if spec.get("is_array") and not isinstance(item, list):
                found.append(f"{where}.{key}: must be an array")
                continue
            for one in items:
                found += self._value(spec, one, f"{where}.{key}")
        return found

    def _value(self, spec: dict[str, Any], value: Any, where: str) -> list[str]:
        kind = spec.get("type", "")
        if kind == "object":
            return [] if isinstance(value, dict) else [f"{where}: must be an object"]
        if kind in self.objects:
            if not isinstance(value, dict):
                return [f"{where}: must be a {kind} object"]
            attributes, at_least_one = self._merged("objects", kind)
            return self._check(attributes, at_least_one, value, where)
        base = kind
        while base in self.types and base not in _SCALARS and self.types[base].get("type"):
            base = self.types[base]["type"]
        allowed = _SCALARS.get(base, (str,))
        if isinstance(value, bool) and bool not in allowed:
            return [f"{where}: {value!r} is not a {kind}"]
        if not isinstance(value, allowed):
            return [f"{where}: {value!r} is not a {kind}"]
        enum = spec.get("enum")
        if enum and str(value) not in enum and not where.endswith(("class_uid", "category_uid")):  # checked above
            return [f"{where}: {value!r} is not one of {sorted(enum)}"]
        return []
