"""The loader spec (loader-spec.json, shared with the cache agent's workflow parser) as ComfyUI INPUT_TYPES."""

import json
import os

SPEC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loader-spec.json")

with open(SPEC_PATH, encoding="utf-8") as _f:
    SPEC = json.load(_f)

SOURCES = list(SPEC["sources"])
NEW_KEY = "LoraVault_Lora_Loader"
LEGACY_KEY = "EmProps_Lora_Loader"
ID_ALIASES = dict(SPEC["idAliases"])
LEGACY_CLASSES = dict(SPEC["legacyClasses"])
_OPTION_KEYS = ("default", "min", "max", "step")


def _input(spec):
    options = {k: spec[k] for k in _OPTION_KEYS if k in spec}
    if spec["type"] == "COMBO":
        return (list(SOURCES), options)
    return (spec["type"], options) if options else (spec["type"],)


def input_types(key):
    """INPUT_TYPES for the node `key` of the spec, in the spec's order (the UI widget order)."""
    node = SPEC["nodes"][key]
    types = {
        "required": {i["name"]: _input(i) for i in node["required"]},
        "hidden": dict(node["hidden"]),
    }
    if node["optional"]:
        types["optional"] = {i["name"]: _input(i) for i in node["optional"]}
    return types


def node_meta(key):
    node = SPEC["nodes"][key]
    return node["displayName"], node["category"], bool(node.get("aliasIfAbsent"))
