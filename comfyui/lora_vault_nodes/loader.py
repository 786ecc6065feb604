"""The loader nodes: every LoRA is resolved through the cache agent and loaded with ComfyUI's own functions."""

import logging
import os
import re

import comfy.sd
import comfy.utils
import folder_paths

from . import context
from .agent_client import AGENT_UNAVAILABLE, AgentCallError, AgentClient
from .config import NodeConfig
from .spec import LEGACY_KEY, NEW_KEY, input_types, node_meta

log = logging.getLogger("lora_vault_nodes")

#: Read once at import; tests and operators may replace it (set_config).
CONFIG = NodeConfig.from_env()
_client = AgentClient(CONFIG)
#: Failures the agent could not count when they happened (it was unreachable), sent with the next call.
_unreported = {}
#: Bumped after a fallback so ComfyUI re-runs a cached fallback once the agent answers again.
_fallback_generation = 0

_LORA_ID = re.compile(r"^[1-9][0-9]{0,18}$")
_USER_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: The extensions the agent gives user LoRAs: the format the API detected (cache-agent/layout.ts).
_USER_LORA_EXTENSIONS = (".safetensors", ".pt")


class LoraUnavailable(Exception):
    """Raised instead of continuing without the LoRA when LORA_VAULT_STRICT is on."""


def set_config(config):
    global CONFIG, _client
    CONFIG = config
    _client = AgentClient(config)


def _blank(value):
    return value is None or str(value).strip() in ("", "None")


def _ref(source, identifier, lora_name):
    """(source, value) to resolve, or None when no LoRA is selected."""
    if source == "user":
        return ("user", "" if identifier is None else str(identifier).strip())
    name = identifier if not _blank(identifier) else lora_name
    return None if _blank(name) else ("shared", str(name).strip())


def _label(ref):
    return "%s:%s" % ref


def _failed(ref, code, message):
    global _fallback_generation
    _fallback_generation += 1
    line = "[EmProps] LoRA %s not loaded (%s): %s" % (_label(ref), code, message)
    if CONFIG.strict:
        log.error(line + "; failing the job (LORA_VAULT_STRICT)")
        raise LoraUnavailable(line)
    log.warning(line + "; continuing without it")
    return None


def resolve(ref):
    """The absolute path of the LoRA `ref` through the agent (None after logging when it cannot be had)."""
    source, value = ref
    if source == "user" and not _LORA_ID.match(value):
        return _failed(ref, "INVALID_REQUEST", "lora_identifier %r is not a LoRA id (a positive integer)" % value)
    body = {"source": source, ("id" if source == "user" else "name"): value}
    body["promptId"] = context.current_prompt_id()
    body["instance"] = context.instance_name(CONFIG)
    if _unreported:
        body["unreported"] = dict(_unreported)
    try:
        answer = _client.call("POST", "/node/ensure", body)
        _unreported.clear()
    except AgentCallError as exc:
        if exc.code == AGENT_UNAVAILABLE:
            _unreported[exc.code] = _unreported.get(exc.code, 0) + 1
        else:
            _unreported.clear()  # the agent answered (it counted what we sent before refusing)
        if source == "shared":
            local = folder_paths.get_full_path("loras", value)
            if local:
                # Today's behaviour for a file in models/loras, said once in the log.
                log.warning("[EmProps] LoRA %s: the agent answered %s (%s); loading %s directly", _label(ref), exc.code, exc.message, local)
                return local
        return _failed(ref, exc.code, exc.message or "the agent refused it")
    path = answer.get("path") if isinstance(answer, dict) else None
    if not isinstance(path, str) or not os.path.isabs(path) or not os.path.isfile(path):
        return _failed(ref, "BAD_PATH", "the agent answered %r, not an existing absolute file" % (path,))
    unexpected = _unexpected_path(ref, path)
    if unexpected:
        # Whatever answers on the agent's address (a process that bound the port first, a misconfigured
        # agent), only the file asked for, where the agent keeps it, is loaded.
        return _failed(ref, "UNEXPECTED_PATH", "the agent answered %s, %s; refusing to load it" % (path, unexpected))
    if source == "user":
        exposing = _loras_folder_holding(path)
        if exposing:
            # Fail closed: ComfyUI's stock loaders list every file under a loras folder, so a user
            # LoRA there is loadable by anyone's workflow (e.g. extra_model_paths.yaml adding a root).
            return _failed(ref, "USER_LORAS_EXPOSED", "%s lies under the loras folder %s, which any workflow can list; "
                           "move the agent's USER_LORA_DIR out of it (or that folder out of extra_model_paths.yaml)" % (path, exposing))
    return path


def user_lora_dir():
    """Where the agent keeps user LoRAs: USER_LORA_DIR, else <ComfyUI models folder>/lora-vault-users (the agent's default)."""
    return CONFIG.user_lora_dir or os.path.join(folder_paths.models_dir, "lora-vault-users")


def _unexpected_path(ref, path):
    """Why `path` is not the agent's file for `ref` (None when it is): a user LoRA must be
    {USER_LORA_DIR}/{user uuid}/{lora id}_….safetensors|pt, a shared one {a loras folder}/{name}, by real path."""
    source, value = ref
    real = os.path.realpath(path)
    if source == "user":
        root = os.path.realpath(user_lora_dir())
        parts = os.path.relpath(real, root).split(os.sep)
        if os.path.commonpath([real, root]) != root or len(parts) != 2:
            return "outside the user LoRA folder %s (set USER_LORA_DIR to the agent's)" % root
        user_id, name = parts
        if not _USER_ID.match(user_id) or not name.startswith(value + "_") or not name.endswith(_USER_LORA_EXTENSIONS):
            return "not LoRA %s's file in %s" % (value, root)
        return None
    name = os.path.normpath(value)
    if os.path.isabs(name) or name.split(os.sep)[0] == "..":
        return "and %r is no shared LoRA name" % value
    # by real path, as the agent resolves its LORA_DIR (a symlinked folder or file is still the same file)
    if any(real == os.path.realpath(os.path.join(folder, name)) for folder in folder_paths.get_folder_paths("loras")):
        return None
    return "not the file %r in a loras folder" % value


def _loras_folder_holding(path):
    """The ComfyUI `loras` folder (any root, extra_model_paths.yaml included) that contains `path`, by real path."""
    real = os.path.realpath(path)
    for folder in folder_paths.get_folder_paths("loras"):
        root = os.path.realpath(folder)
        if os.path.commonpath([real, root]) == root:
            return folder
    return None


class LoraVaultLoraLoader:
    """LoRA by `lora_source` ("shared" file name | "user" LoRA id); the legacy `lora_name` when the identifier is blank."""

    RETURN_TYPES = ("MODEL", "CLIP")
    RETURN_NAMES = ("MODEL", "CLIP")
    FUNCTION = "load_lora"
    CATEGORY = node_meta(NEW_KEY)[1]

    def __init__(self):
        self.loaded_lora = None

    @classmethod
    def INPUT_TYPES(cls):
        return input_types(NEW_KEY)

    @classmethod
    def IS_CHANGED(cls, lora_source="shared", lora_identifier="", lora_name="", **kwargs):
        # A user LoRA runs again for every prompt: another user's job must never reuse this output
        # (the agent decides per job). Shared ones are cached until a fallback happened.
        if lora_source == "user":
            return "user:%s:%s" % (lora_identifier, context.current_prompt_id())
        return "shared:%s:%s:%d" % (lora_identifier, lora_name, _fallback_generation)

    def load_lora(self, model, clip, lora_source, lora_identifier, strength_model, strength_clip, lora_name="", node_id=None):
        ref = _ref(lora_source, lora_identifier, lora_name)
        return self._apply(model, clip, ref, strength_model, strength_clip)

    def _apply(self, model, clip, ref, strength_model, strength_clip):
        if ref is None or (strength_model == 0 and strength_clip == 0):
            return (model, clip)
        path = resolve(ref)
        if path is None:
            return (model, clip)
        lora = self._load(path)
        return comfy.sd.load_lora_for_models(model, clip, lora, strength_model, strength_clip)

    def _load(self, path):
        """Like LoraLoader: the last LoRA stays in memory; reused only while the same file is unchanged."""
        st = os.stat(path)
        key = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if self.loaded_lora is not None and self.loaded_lora[0] == key:
            return self.loaded_lora[1]
        self.loaded_lora = None
        lora = comfy.utils.load_torch_file(path, safe_load=True)
        self.loaded_lora = (key, lora)
        return lora


class EmPropsLoraLoaderCompat(LoraVaultLoraLoader):
    """`EmProps_Lora_Loader` as the fleet's workflows use it (`lora_name`, widgets [lora_name, sm, sc]),
    registered only when no other package provides that key. The LoRA is a shared one, through the agent."""

    CATEGORY = node_meta(LEGACY_KEY)[1]

    @classmethod
    def INPUT_TYPES(cls):
        return input_types(LEGACY_KEY)

    @classmethod
    def IS_CHANGED(cls, lora_name="", **kwargs):
        return "shared:%s:%d" % (lora_name, _fallback_generation)

    def load_lora(self, model, clip, lora_name, strength_model, strength_clip, node_id=None):
        return self._apply(model, clip, _ref("shared", "", lora_name), strength_model, strength_clip)
