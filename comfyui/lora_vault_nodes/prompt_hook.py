"""Rewrites each submitted prompt before ComfyUI validates it (PromptServer.add_on_prompt_handler):

- a seed-shaped `EmProps_Lora_Loader` node (`lora_source` / `lora_identifier` / `lora_id`, which the
  public node does not declare) becomes `LoraVault_Lora_Loader`, whoever owns the old key;
- every `is_changed` key is removed: a prompt must not pin a node's cache signature (it would let one
  user's job reuse another's LoRA-patched model).
"""

import logging

from .spec import ID_ALIASES, LEGACY_CLASSES, LEGACY_KEY, NEW_KEY

log = logging.getLogger("lora_vault_nodes")
_SEED_INPUTS = {"lora_source", "lora_identifier", *ID_ALIASES}
_OLD_KEYS = {LEGACY_KEY, *LEGACY_CLASSES}


def normalise_prompt(prompt):
    """Rewrites an API-format prompt in place; returns it."""
    if not isinstance(prompt, dict):
        return prompt
    for node in prompt.values():
        if not isinstance(node, dict):
            continue
        node.pop("is_changed", None)
        inputs = node.get("inputs")
        if node.get("class_type") in _OLD_KEYS and isinstance(inputs, dict) and _SEED_INPUTS & inputs.keys():
            node["class_type"] = NEW_KEY
            for alias, name in ID_ALIASES.items():
                if alias in inputs:
                    value = inputs.pop(alias)
                    inputs.setdefault(name, value)
            inputs.setdefault("lora_source", "shared")
            inputs.setdefault("lora_identifier", "")
    return prompt


def on_prompt(json_data):
    if isinstance(json_data, dict):
        normalise_prompt(json_data.get("prompt"))
    return json_data


def install_prompt_hook():
    try:
        import server
    except ImportError:
        return False
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None or not hasattr(instance, "add_on_prompt_handler"):
        log.warning("[EmProps] no PromptServer: seed-shaped EmProps_Lora_Loader prompts are not rewritten")
        return False
    instance.add_on_prompt_handler(on_prompt)
    return True
