"""bench:node's Python side: the lora-vault node's resolve of a cached LoRA through the agent (TCP and
unix socket), beside a bare os.stat of the same file, in alternating blocks in one process.

Input (env BENCH_NODE_FIXTURE, JSON): {comfyDir, transports: [{name, url | socket, promptId}], loraId,
calls, warmup, block}. Output: one JSON line {"samples": {name: [ms, ...], "stat": [ms, ...]}, "path": ...}."""

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(ROOT, "test", "python", "comfy_double")]

import folder_paths  # noqa: E402
import nodes  # noqa: E402
import server  # noqa: E402
from comfy_execution.utils import CurrentNodeContext  # noqa: E402

with open(os.environ["BENCH_NODE_FIXTURE"], encoding="utf-8") as f:
    FX = json.load(f)
folder_paths.init(FX["comfyDir"])
server.PromptServer()
package = nodes.load_custom_node(os.path.join(ROOT, "comfyui", "lora_vault_nodes"))
loader = sys.modules[package.__name__ + ".loader"]
config = sys.modules[package.__name__ + ".config"]


def resolver(transport):
    cfg = config.NodeConfig(agent_url=transport.get("url") or config.DEFAULT_AGENT_URL, agent_socket=transport.get("socket"),
                            instance="bench")

    def run():
        loader.set_config(cfg)
        with CurrentNodeContext(transport["promptId"], "2"):
            t0 = time.perf_counter()
            path = loader.resolve(("user", FX["loraId"]))
            ms = (time.perf_counter() - t0) * 1000
        if path is None:
            raise SystemExit("resolve failed through %s" % transport["name"])
        return ms, path

    return run


def floor(transport):
    """GET /health through the same client: the transport + HTTP floor under the resolve."""
    client = sys.modules[package.__name__ + ".agent_client"].AgentClient(
        config.NodeConfig(agent_url=transport.get("url") or config.DEFAULT_AGENT_URL, agent_socket=transport.get("socket")))

    def run():
        t0 = time.perf_counter()
        client.call("GET", "/health")
        return (time.perf_counter() - t0) * 1000, None

    return run


runs = {t["name"]: resolver(t) for t in FX["transports"]}
runs.update({t["name"] + "-health": floor(t) for t in FX["transports"]})
path = None
for name, run in runs.items():
    for _ in range(FX["warmup"]):
        _, p = run()
        path = p or path


def stat_once():
    t0 = time.perf_counter()
    os.stat(path)
    return (time.perf_counter() - t0) * 1000


for _ in range(FX["warmup"]):
    stat_once()
samples = {name: [] for name in runs}
samples["stat"] = []
done = 0
while done < FX["calls"]:
    n = min(FX["block"], FX["calls"] - done)
    for name, run in runs.items():
        loader.set_config(config.NodeConfig())  # not timed
        samples[name].extend(run()[0] for _ in range(n))
    samples["stat"].extend(stat_once() for _ in range(n))
    done += n
print(json.dumps({"samples": samples, "path": path}))
