"""lora-vault's LoRA loader for ComfyUI (copy this folder into ComfyUI/custom_nodes/). See README.md."""

import logging

from .loader import EmPropsLoraLoaderCompat, LoraVaultLoraLoader
from .prompt_hook import install_prompt_hook
from .spec import LEGACY_KEY, NEW_KEY, node_meta

NODE_CLASS_MAPPINGS = {NEW_KEY: LoraVaultLoraLoader}
NODE_DISPLAY_NAME_MAPPINGS = {NEW_KEY: node_meta(NEW_KEY)[0]}


def _legacy_key_taken():
    try:
        import nodes
    except ImportError:
        return False
    return LEGACY_KEY in getattr(nodes, "NODE_CLASS_MAPPINGS", {})


# The old key is ours only when no package registered it before us (a package loaded after us that
# registers it wins, as ComfyUI merges mappings last-wins): the public emprops_comfy_nodes always keeps it.
if _legacy_key_taken():
    logging.getLogger("lora_vault_nodes").info("[EmProps] %s is provided by another package: lora-vault registers only %s", LEGACY_KEY, NEW_KEY)
else:
    NODE_CLASS_MAPPINGS[LEGACY_KEY] = EmPropsLoraLoaderCompat
    NODE_DISPLAY_NAME_MAPPINGS[LEGACY_KEY] = node_meta(LEGACY_KEY)[0]

install_prompt_hook()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
