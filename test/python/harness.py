"""Loads the lora-vault node package into the ComfyUI test double, as ComfyUI does, against the real
agent and API the vitest test started (fixture: LORA_VAULT_TEST_FIXTURE, a JSON file)."""

import json
import os
import sqlite3
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
PACKAGE_DIR = os.path.join(ROOT, "comfyui", "lora_vault_nodes")
sys.path[:0] = [os.path.join(HERE, "comfy_double"), HERE, os.path.join(ROOT, "comfyui", "runner-example")]

with open(os.environ["LORA_VAULT_TEST_FIXTURE"], encoding="utf-8") as _f:
    FIXTURE = json.load(_f)

os.environ["LORA_VAULT_AGENT_URL"] = FIXTURE["agentUrl"]
os.environ["LORA_VAULT_INSTANCE"] = "comfy-test"
os.environ.pop("AGENT_SOCKET", None)
os.environ.pop("LORA_VAULT_STRICT", None)

import folder_paths  # noqa: E402
import nodes  # noqa: E402
import server  # noqa: E402

folder_paths.init(FIXTURE["comfyDir"])
server.PromptServer()
PACKAGE = nodes.load_custom_node(PACKAGE_DIR)
loader = sys.modules[PACKAGE.__name__ + ".loader"]
config = sys.modules[PACKAGE.__name__ + ".config"]

import run_job  # noqa: E402  (the runner example drives the job endpoints)

AGENT = run_job.AgentJobs(config.NodeConfig(agent_url=FIXTURE["agentUrl"]))
SOCKET_AGENT = run_job.AgentJobs(config.NodeConfig(agent_socket=FIXTURE["agentSocket"]))


def live_config(**changes):
    values = {"agent_url": FIXTURE["agentUrl"], "instance": "comfy-test", **changes}
    return config.NodeConfig(**values)


def new_ids():
    return "job-" + uuid.uuid4().hex[:12], str(uuid.uuid4())


def job_leases(job_id, db=None):
    """Live leases of the job's holder in model_cache.db (what eviction respects)."""
    with sqlite3.connect(db or FIXTURE["dbPath"], timeout=5) as conn:
        rows = conn.execute(
            "SELECT path, expires_at_ms FROM lora_cache_leases WHERE holder = ? AND expires_at_ms > ?",
            ("job:" + job_id, int(time.time() * 1000)),
        ).fetchall()
    return rows


def stats(agent=None):
    return (agent or AGENT).client.call("GET", "/stats")
