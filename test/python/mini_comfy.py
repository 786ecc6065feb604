"""A small stand-in for ComfyUI's prompt execution (execution.py), enough to run the loader nodes as
ComfyUI does: on-prompt handlers, then validation (required inputs, FLOAT bounds, combos, STRING
coercion, undeclared inputs dropped), then execution with node objects kept per node id, outputs
reused across prompts by signature (IS_CHANGED included), the execution context around IS_CHANGED and
FUNCTION, and PromptServer.last_prompt_id set as prompt_worker does. Plus the frontend's UI → API
conversion (widgets_values positional against the current node definition)."""

import sys

import comfy.sd
import nodes
import server

WIDGET_TYPES = {"FLOAT", "INT", "STRING", "BOOLEAN", "COMBO"}


class TestCheckpoint:
    """A source of MODEL and CLIP."""

    RETURN_TYPES = ("MODEL", "CLIP")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "base"})}}

    def load(self, name):
        return (comfy.sd.Patcher(name + ":model"), comfy.sd.Patcher(name + ":clip"))


nodes.NODE_CLASS_MAPPINGS.setdefault("TestCheckpoint", TestCheckpoint)


class PromptRejected(Exception):
    def __init__(self, kind, node_id, detail):
        super().__init__("%s at node %s: %s" % (kind, node_id, detail))
        self.kind, self.node_id, self.detail = kind, node_id, detail


def _is_link(value):
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _declared(cls):
    types = cls.INPUT_TYPES()
    return types.get("required", {}), types.get("optional", {}), types.get("hidden", {})


def validate(prompt):
    checked = {}
    for node_id, node in prompt.items():
        cls = nodes.NODE_CLASS_MAPPINGS.get(node.get("class_type"))
        if cls is None:
            raise PromptRejected("invalid_prompt", node_id, "unknown class_type %r" % node.get("class_type"))
        required, optional, _ = _declared(cls)
        given = node.get("inputs", {})
        inputs = {}
        for category, declared in (("required", required), ("optional", optional)):
            for name, spec in declared.items():
                if name not in given:
                    if category == "required":
                        raise PromptRejected("required_input_missing", node_id, name)
                    continue
                value = given[name]
                if _is_link(value):
                    inputs[name] = value
                    continue
                kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
                if kind == "STRING":
                    value = str(value)
                elif kind == "FLOAT":
                    value = float(value)
                    if "min" in options and value < options["min"] or "max" in options and value > options["max"]:
                        raise PromptRejected("value_out_of_range", node_id, name)
                elif isinstance(kind, list) and value not in kind:
                    raise PromptRejected("value_not_in_list", node_id, "%s=%r" % (name, value))
                inputs[name] = value
        checked[node_id] = {"class_type": node["class_type"], "inputs": inputs, **({"is_changed": node["is_changed"]} if "is_changed" in node else {})}
    return checked


class MiniComfy:
    def __init__(self, with_context=True):
        self.objects = {}
        self.outputs = {}
        self.with_context = with_context
        self.executed = []

    def submit(self, prompt, prompt_id):
        data = server.PromptServer.instance.trigger_on_prompt({"prompt": prompt, "prompt_id": prompt_id})
        checked = validate(data["prompt"])
        server.PromptServer.instance.last_prompt_id = prompt_id
        results, signatures = {}, {}
        for node_id in checked:
            self._run(checked, node_id, prompt_id, results, signatures)
        return results

    def _context(self, prompt_id, node_id):
        if not self.with_context:
            return _Null()
        from comfy_execution.utils import CurrentNodeContext

        return CurrentNodeContext(prompt_id, node_id)

    def _run(self, prompt, node_id, prompt_id, results, signatures):
        if node_id in results:
            return results[node_id]
        node = prompt[node_id]
        cls = nodes.NODE_CLASS_MAPPINGS[node["class_type"]]
        args, parts = {}, [node["class_type"]]
        for name, value in sorted(node["inputs"].items()):
            if _is_link(value):
                args[name] = self._run(prompt, value[0], prompt_id, results, signatures)[value[1]]
                parts.append((name, signatures[value[0]], value[1]))
            else:
                args[name] = value
                parts.append((name, repr(value)))
        for name, kind in _declared(cls)[2].items():
            if kind == "UNIQUE_ID":
                args[name] = node_id
        if "is_changed" in node:
            changed = node["is_changed"]
        elif hasattr(cls, "IS_CHANGED"):
            with self._context(prompt_id, node_id):
                changed = cls.IS_CHANGED(**{k: v for k, v in args.items() if not _is_link(node["inputs"].get(k))})
        else:
            changed = None
        parts.append(("is_changed", repr(changed)))
        signature = repr(parts)
        signatures[node_id] = signature
        if signature in self.outputs:
            results[node_id] = self.outputs[signature]
            return results[node_id]
        obj = self.objects.get((node_id, cls))
        if obj is None:
            obj = self.objects[(node_id, cls)] = cls()
        with self._context(prompt_id, node_id):
            output = getattr(obj, cls.FUNCTION)(**args)
        self.executed.append(node_id)
        self.outputs[signature] = results[node_id] = output
        return output


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def ui_to_api(workflow):
    """The frontend's conversion: widgets_values by position against the current definition; links by id."""
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode") in (2, 4):
            continue
        cls = nodes.NODE_CLASS_MAPPINGS[node["type"]]
        required, optional, _ = _declared(cls)
        names = [n for n, spec in {**required, **optional}.items() if isinstance(spec[0], list) or spec[0] in WIDGET_TYPES]
        inputs = dict(zip(names, node.get("widgets_values", [])))
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def without_execution_context():
    """Simulates ComfyUI < 0.3.45: `comfy_execution.utils` cannot be imported."""
    saved = sys.modules.get("comfy_execution.utils")
    sys.modules["comfy_execution.utils"] = None
    return saved
