"""Test double of ComfyUI's nodes.py: LoraLoader as upstream, the mappings, and load_custom_node
(import by file location; built-in names are never replaced; between packages the last one wins)."""

import importlib.util
import os
import sys

import comfy.sd
import comfy.utils
import folder_paths


class LoraLoader:
    def __init__(self):
        self.loaded_lora = None

    @classmethod
    def INPUT_TYPES(cls):
        f = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}
        return {"required": {"model": ("MODEL",), "clip": ("CLIP",), "lora_name": (folder_paths.get_filename_list("loras"),),
                             "strength_model": ("FLOAT", f), "strength_clip": ("FLOAT", f)}}

    RETURN_TYPES = ("MODEL", "CLIP")
    FUNCTION = "load_lora"
    CATEGORY = "loaders"

    def load_lora(self, model, clip, lora_name, strength_model, strength_clip):
        if strength_model == 0 and strength_clip == 0:
            return (model, clip)
        lora_path = folder_paths.get_full_path_or_raise("loras", lora_name)
        lora = None
        if self.loaded_lora is not None and self.loaded_lora[0] == lora_path:
            lora = self.loaded_lora[1]
        if lora is None:
            lora = comfy.utils.load_torch_file(lora_path, safe_load=True)
            self.loaded_lora = (lora_path, lora)
        return comfy.sd.load_lora_for_models(model, clip, lora, strength_model, strength_clip)


NODE_CLASS_MAPPINGS = {"LoraLoader": LoraLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"LoraLoader": "Load LoRA"}
BUILTIN_NODE_NAMES = set(NODE_CLASS_MAPPINGS)


def load_custom_node(module_path):
    name = os.path.basename(module_path)
    spec = importlib.util.spec_from_file_location(module_path.replace(".", "_x_"), os.path.join(module_path, "__init__.py"),
                                                  submodule_search_locations=[module_path])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    for key, cls in getattr(module, "NODE_CLASS_MAPPINGS", {}).items():
        if key not in BUILTIN_NODE_NAMES:
            NODE_CLASS_MAPPINGS[key] = cls
    NODE_DISPLAY_NAME_MAPPINGS.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}))
    return module
