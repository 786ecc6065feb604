#!/usr/bin/env python3
"""A job runner's side of lora-vault, as a small example (Python 3 standard library only).

    service token --createJobGrant--> job grant
    POST agent /jobs {jobId, grant, promptId, instance, workflow}      (prefetches the job's LoRAs)
    POST ComfyUI /prompt {prompt, prompt_id}                           (no grant in it: nothing secret)
    wait for /history/<prompt_id>
    POST agent /jobs/<jobId>/end {grant}                               (always, in `finally`)

The grant goes from the API to the agent only; the ComfyUI node finds the job by the prompt id it
executes. If this process dies, the job and its leases expire (at most LEASE_MAX_SECONDS).

    python3 run_job.py --api https://lora-vault.example.com/graphql --service-token-file /etc/runner/token \
        --user <user id> --workflow workflow_api.json [--comfy http://127.0.0.1:8188] [--instance 8188]

The agent's address: AGENT_SOCKET, else LORA_VAULT_AGENT_URL (default http://127.0.0.1:7433).
"""

import argparse
import json
import os
import sys
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lora_vault_nodes"))
from agent_client import AgentClient  # noqa: E402  (standalone modules of the node package)
from config import NodeConfig  # noqa: E402

GRANT_MUTATION = (
    "mutation($u: ID!, $j: String!, $t: Int) { createJobGrant(userId: $u, jobId: $j, ttlSeconds: $t) "
    "{ token expiresAt } }"
)


def _post_json(url, body, headers=None, timeout=30):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode())


def create_job_grant(api_url, service_token, user_id, job_id, ttl_seconds=3600):
    """The job grant for `user_id`, minted with the dispatcher's service token."""
    answer = _post_json(api_url, {"query": GRANT_MUTATION, "variables": {"u": user_id, "j": job_id, "t": ttl_seconds}},
                        {"authorization": "Bearer " + service_token})
    grant = ((answer.get("data") or {}).get("createJobGrant") or {})
    if not grant.get("token"):
        raise RuntimeError("createJobGrant failed: %s" % json.dumps(answer)[:500])
    return grant["token"]


class AgentJobs:
    """The agent's job endpoints."""

    def __init__(self, config=None):
        self.client = AgentClient(config or NodeConfig.from_env())

    def register(self, job_id, grant, prompt_id=None, instance=None, workflow=None, ttl_seconds=None):
        body = {"jobId": job_id, "grant": grant, "promptId": prompt_id, "instance": instance}
        if workflow is not None:
            body["workflow"] = workflow
        if ttl_seconds is not None:
            body["ttlSeconds"] = ttl_seconds
        return self.client.call("POST", "/jobs", body)

    def bind(self, job_id, grant, prompt_id):
        """For ComfyUI < 0.3.45, which ignores a chosen prompt_id: bind the one /prompt returned."""
        return self.client.call("POST", "/jobs/%s/prompt" % job_id, {"grant": grant, "promptId": prompt_id})

    def end(self, job_id, grant):
        return self.client.call("POST", "/jobs/%s/end" % job_id, {"grant": grant})


def submit_prompt(comfy_url, prompt, prompt_id, client_id=None):
    """POST /prompt; returns the prompt id ComfyUI uses (older versions choose their own)."""
    answer = _post_json(comfy_url.rstrip("/") + "/prompt", {"prompt": prompt, "prompt_id": prompt_id, "client_id": client_id or prompt_id})
    return answer.get("prompt_id") or prompt_id


def wait_for_prompt(comfy_url, prompt_id, timeout=3600, poll=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(comfy_url.rstrip("/") + "/history/" + prompt_id, timeout=30) as response:
            history = json.loads(response.read().decode())
        if prompt_id in history:
            return history[prompt_id]
        time.sleep(poll)
    raise TimeoutError("prompt %s did not finish in %s s" % (prompt_id, timeout))


def run_job(api_url, service_token, user_id, prompt, comfy_url, instance=None, job_id=None, agent=None):
    job_id = job_id or "job-" + uuid.uuid4().hex
    prompt_id = str(uuid.uuid4())
    grant = create_job_grant(api_url, service_token, user_id, job_id)
    agent = agent or AgentJobs()
    agent.register(job_id, grant, prompt_id=prompt_id, instance=instance, workflow=prompt)
    try:
        used = submit_prompt(comfy_url, prompt, prompt_id)
        if used != prompt_id:
            agent.bind(job_id, grant, used)
        return wait_for_prompt(comfy_url, used)
    finally:
        agent.end(job_id, grant)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--api", required=True, help="the API's /graphql URL")
    parser.add_argument("--service-token-file", required=True)
    parser.add_argument("--user", required=True, help="the job's user id")
    parser.add_argument("--workflow", required=True, help="an API-format workflow JSON file")
    parser.add_argument("--comfy", default="http://127.0.0.1:8188")
    parser.add_argument("--instance", default=os.environ.get("LORA_VAULT_INSTANCE"))
    args = parser.parse_args(argv)
    with open(args.service_token_file, encoding="utf-8") as f:
        token = f.read().strip()
    with open(args.workflow, encoding="utf-8") as f:
        prompt = json.load(f)
    result = run_job(args.api, token, args.user, prompt, args.comfy, instance=args.instance)
    print(json.dumps(result.get("status", {}), indent=2))


if __name__ == "__main__":
    main()
