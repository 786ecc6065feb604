"""Which prompt the node runs for, and which ComfyUI instance it is: the handle the agent finds the job by."""


def current_prompt_id():
    """The executing prompt's id: ComfyUI's execution context (>= 0.3.45), else PromptServer.last_prompt_id
    (one worker thread executes prompts, so it is the running one). None when neither is known."""
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:
        get_executing_context = None
    if get_executing_context is not None:
        context = get_executing_context()
        prompt_id = getattr(context, "prompt_id", None)
        if prompt_id:
            return str(prompt_id)
    try:
        import server
    except ImportError:
        return None
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    prompt_id = getattr(instance, "last_prompt_id", None)
    return str(prompt_id) if prompt_id else None


def instance_name(config):
    """LORA_VAULT_INSTANCE, else this ComfyUI's --port, else None (the agent then does not compare instances)."""
    if config.instance:
        return config.instance
    try:
        from comfy.cli_args import args
    except ImportError:
        return None
    port = getattr(args, "port", None)
    return str(port) if port else None
