"""Test double of comfy_execution.utils (ComfyUI >= 0.3.45): the executing context is a contextvar."""

import contextvars
from typing import NamedTuple, Optional


class ExecutionContext(NamedTuple):
    prompt_id: str
    node_id: str
    list_index: Optional[int] = None


_current = contextvars.ContextVar("executing_context", default=None)


def get_executing_context():
    return _current.get()


class CurrentNodeContext:
    def __init__(self, prompt_id, node_id, list_index=None):
        self.context = ExecutionContext(prompt_id, node_id, list_index)
        self.token = None

    def __enter__(self):
        self.token = _current.set(self.context)
        return self

    def __exit__(self, *exc):
        _current.reset(self.token)
