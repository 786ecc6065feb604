"""The node's configuration, read from the environment (documented in README.md)."""

import os
from dataclasses import dataclass
from typing import Optional

DEFAULT_AGENT_URL = "http://127.0.0.1:7433"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class NodeConfig:
    #: AGENT_SOCKET: the agent's unix socket; when set it is used instead of TCP.
    agent_socket: Optional[str] = None
    #: LORA_VAULT_AGENT_URL: the agent over TCP. @default http://127.0.0.1:7433
    agent_url: str = DEFAULT_AGENT_URL
    #: LORA_VAULT_STRICT: fail the job when a LoRA cannot be had (default: continue without it, logged).
    strict: bool = False
    #: LORA_VAULT_INSTANCE: this ComfyUI's name in job registrations. @default its --port
    instance: Optional[str] = None
    #: LORA_VAULT_CONNECT_TIMEOUT seconds. @default 1
    connect_timeout: float = 1.0
    #: LORA_VAULT_ENSURE_TIMEOUT seconds a resolve may take (downloads included). @default 600
    ensure_timeout: float = 600.0
    #: USER_LORA_DIR: where the agent keeps user LoRAs (the agent's variable of the same name); a user LoRA
    #: path the agent answers outside it is refused. @default <ComfyUI models folder>/lora-vault-users
    user_lora_dir: Optional[str] = None

    @classmethod
    def from_env(cls, env=None):
        env = os.environ if env is None else env
        return cls(
            agent_socket=env.get("AGENT_SOCKET") or None,
            agent_url=env.get("LORA_VAULT_AGENT_URL") or DEFAULT_AGENT_URL,
            strict=(env.get("LORA_VAULT_STRICT") or "").strip().lower() in _TRUE,
            instance=env.get("LORA_VAULT_INSTANCE") or None,
            connect_timeout=_seconds(env, "LORA_VAULT_CONNECT_TIMEOUT", 1.0),
            ensure_timeout=_seconds(env, "LORA_VAULT_ENSURE_TIMEOUT", 600.0),
            user_lora_dir=env.get("USER_LORA_DIR") or None,
        )


def _seconds(env, name, default):
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("%s must be a number of seconds, got %r" % (name, raw))
    if value <= 0:
        raise ValueError("%s must be positive, got %r" % (name, raw))
    return value
