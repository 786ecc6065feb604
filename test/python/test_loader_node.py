"""The lora-vault loader node, in the ComfyUI test double, against a real agent and a real API."""

import os
import threading
import time
import unittest

from harness import AGENT, FIXTURE, SOCKET_AGENT, job_leases, live_config, loader, new_ids, stats  # first: sets up the double

import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402
import mini_comfy  # noqa: E402
import nodes  # noqa: E402

USER, OTHER, SHARED = FIXTURE["user"], FIXTURE["other"], FIXTURE["shared"]
LOG = "lora_vault_nodes"


def graph(loader_node):
    return {"1": {"class_type": "TestCheckpoint", "inputs": {"name": "base"}},
            "2": {**loader_node, "inputs": {"model": ["1", 0], "clip": ["1", 1], **loader_node["inputs"]}}}


def user_node(lora_id, **extra):
    return {"class_type": "LoraVault_Lora_Loader",
            "inputs": {"lora_source": "user", "lora_identifier": lora_id, "strength_model": 1.0, "strength_clip": 1.0, **extra}}


class NodeTestCase(unittest.TestCase):
    def setUp(self):
        loader.set_config(live_config())
        self.comfy = mini_comfy.MiniComfy()
        self.jobs = []

    def tearDown(self):
        for agent, job_id, grant in self.jobs:
            agent.end(job_id, grant)

    def job(self, who=USER, agent=AGENT, **options):
        job_id, prompt_id = new_ids()
        agent.register(job_id, who["grant"], prompt_id=prompt_id, instance="comfy-test", **options)
        self.jobs.append((agent, job_id, who["grant"]))
        return job_id, prompt_id

    def loaded(self, result):
        """The (sha256 of the file loaded, strength) patches on the node's model output."""
        model, clip = result["2"]
        return model.patches, clip.patches

    def assertLoaded(self, result, sha256, strengths=(1.0, 1.0)):
        self.assertEqual(comfy.utils.LOADS[-1][1], sha256)
        model_patches, clip_patches = self.loaded(result)
        self.assertEqual([s for _, s in model_patches], [strengths[0]])
        self.assertEqual([s for _, s in clip_patches], [strengths[1]])


class UserAndShared(NodeTestCase):
    def test_user_lora_by_id_miss_then_hit(self):
        lora = USER["loras"][0]
        before = stats()
        job_id, prompt_id = self.job()
        result = self.comfy.submit(graph(user_node(lora["id"])), prompt_id)
        self.assertLoaded(result, lora["sha256"])
        self.assertTrue(comfy.utils.LOADS[-1][0].startswith("/"))
        self.assertEqual(len(job_leases(job_id)), 1)  # held for the job
        loads = len(comfy.utils.LOADS)
        _, prompt2 = self.job()
        result2 = self.comfy.submit(graph(user_node(lora["id"])), prompt2)
        self.assertEqual(len(comfy.utils.LOADS), loads)  # kept in memory like LoraLoader
        self.assertEqual(len(self.loaded(result2)[0]), 1)
        self.assertEqual(before["nodeFailures"], stats()["nodeFailures"])

    def test_shared_lora_by_name_with_and_without_a_job(self):
        _, prompt_id = self.job()
        node = {"class_type": "LoraVault_Lora_Loader",
                "inputs": {"lora_source": "shared", "lora_identifier": SHARED["name"], "strength_model": 0.5, "strength_clip": 0.25}}
        self.assertLoaded(self.comfy.submit(graph(node), prompt_id), SHARED["sha256"], (0.5, 0.25))
        self.assertLoaded(mini_comfy.MiniComfy().submit(graph(node), "no-job-" + prompt_id), SHARED["sha256"], (0.5, 0.25))

    def test_strengths_zero_or_no_lora_pass_the_model_through_without_asking(self):
        _, prompt_id = self.job()
        for inputs in ({"lora_identifier": USER["loras"][0]["id"], "strength_model": 0.0, "strength_clip": 0.0},
                       {"lora_source": "shared", "lora_identifier": "None"}, {"lora_source": "shared", "lora_identifier": ""}):
            node = user_node("1", **inputs)
            with self.assertNoLogs(LOG, level="WARNING"):
                result = mini_comfy.MiniComfy().submit(graph(node), prompt_id)
            self.assertEqual(self.loaded(result), ([], []))

    def test_ui_format_workflow(self):
        _, prompt_id = self.job()
        ui = {"nodes": [{"id": 1, "type": "TestCheckpoint", "widgets_values": ["base"]},
                        {"id": 2, "type": "LoraVault_Lora_Loader", "mode": 0,
                         "inputs": [{"name": "model", "link": 1}, {"name": "clip", "link": 2}],
                         "widgets_values": ["user", USER["loras"][0]["id"], 0.5, 0.75, ""]}],
              "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 1, 1, 2, 1, "CLIP"]]}
        self.assertLoaded(self.comfy.submit(mini_comfy.ui_to_api(ui), prompt_id), USER["loras"][0]["sha256"], (0.5, 0.75))

    def test_unix_socket_agent(self):
        # that agent runs for another ComfyUI folder: the node is told where its user LoRAs live
        loader.set_config(live_config(agent_socket=FIXTURE["agentSocket"], user_lora_dir=FIXTURE["socketUserLoraDir"]))
        job_id, prompt_id = self.job(agent=SOCKET_AGENT)
        self.assertLoaded(self.comfy.submit(graph(user_node(USER["loras"][0]["id"])), prompt_id), USER["loras"][0]["sha256"])
        self.assertEqual(len(job_leases(job_id, FIXTURE["socketDbPath"])), 1)


class OldWorkflowShapes(NodeTestCase):
    """Every shape the fleet runs (research notes §4: A v1, B v2, C linked, D seed, F values), API and UI."""

    def run_shape(self, node, sha256, ui_widgets=None):
        _, prompt_id = self.job()
        if ui_widgets is not None:
            ui = {"nodes": [{"id": 1, "type": "TestCheckpoint", "widgets_values": ["base"]},
                            {"id": 2, "type": node, "inputs": [{"name": "model", "link": 1}, {"name": "clip", "link": 2}],
                             "widgets_values": ui_widgets}],
                  "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 1, 1, 2, 1, "CLIP"]]}
            prompt = mini_comfy.ui_to_api(ui)
        else:
            prompt = graph(node)
        result = mini_comfy.MiniComfy().submit(prompt, prompt_id)
        self.assertLoaded(result, sha256)

    def test_a_v1_api_lora_name_on_the_emprops_key(self):
        self.run_shape({"class_type": "EmProps_Lora_Loader",
                        "inputs": {"lora_name": SHARED["name"], "strength_model": 1, "strength_clip": 1}}, SHARED["sha256"])

    def test_a_v1_ui_widgets_lora_name_first(self):
        self.run_shape("EmProps_Lora_Loader", SHARED["sha256"], ui_widgets=[SHARED["name"], 1.0, 1.0])

    def test_b_v2_api_provider_and_bucket_are_dropped(self):
        self.run_shape({"class_type": "EmProps_Lora_Loader",
                        "inputs": {"lora_name": SHARED["name"], "provider": "aws", "bucket": "emprops-share",
                                   "strength_model": 1, "strength_clip": 1}}, SHARED["sha256"])

    def test_d_seed_api_on_the_emprops_key_rewritten_to_the_new_node(self):
        for key in ("lora_identifier", "lora_id"):
            with self.subTest(key=key):
                self.run_shape({"class_type": "EmProps_Lora_Loader",
                                "inputs": {"lora_source": "user", key: USER["loras"][0]["id"], "strength_model": 1, "strength_clip": 1}},
                               USER["loras"][0]["sha256"])

    def test_d_numeric_id(self):
        self.run_shape(user_node(int(USER["loras"][0]["id"])), USER["loras"][0]["sha256"])

    def test_new_node_legacy_lora_name_when_identifier_blank(self):
        self.run_shape({"class_type": "LoraVault_Lora_Loader",
                        "inputs": {"lora_source": "shared", "lora_identifier": "", "lora_name": SHARED["name"],
                                   "strength_model": 1, "strength_clip": 1}}, SHARED["sha256"])

    def test_c_linked_lora_name_from_another_node(self):
        prompt = graph({"class_type": "EmProps_Lora_Loader",
                        "inputs": {"lora_name": ["3", 0], "strength_model": 1, "strength_clip": 1}})
        prompt["3"] = {"class_type": "TestName", "inputs": {"name": SHARED["name"]}}
        _, prompt_id = self.job()
        self.assertLoaded(mini_comfy.MiniComfy().submit(prompt, prompt_id), SHARED["sha256"])

    def test_the_public_package_keeps_its_key_when_it_loaded_first(self):
        import os
        import tempfile

        saved = dict(nodes.NODE_CLASS_MAPPINGS)
        try:
            fake = os.path.join(tempfile.mkdtemp(), "emprops_comfy_nodes")
            os.makedirs(fake)
            with open(os.path.join(fake, "__init__.py"), "w") as f:
                f.write("class Public:\n    pass\nNODE_CLASS_MAPPINGS = {'EmProps_Lora_Loader': Public}\n")
            public = nodes.load_custom_node(fake).NODE_CLASS_MAPPINGS["EmProps_Lora_Loader"]
            from harness import PACKAGE_DIR

            ours = nodes.load_custom_node(PACKAGE_DIR)
            self.assertNotIn("EmProps_Lora_Loader", ours.NODE_CLASS_MAPPINGS)
            self.assertIs(nodes.NODE_CLASS_MAPPINGS["EmProps_Lora_Loader"], public)
            self.assertIn("LoraVault_Lora_Loader", ours.NODE_CLASS_MAPPINGS)
        finally:
            nodes.NODE_CLASS_MAPPINGS.clear()
            nodes.NODE_CLASS_MAPPINGS.update(saved)


class TestName:
    RETURN_TYPES = ("STRING",)
    FUNCTION = "name"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING",)}}

    def name(self, name):
        return (name,)


nodes.NODE_CLASS_MAPPINGS["TestName"] = TestName


class Isolation(NodeTestCase):
    def test_a_workflow_naming_another_users_lora_id_gets_nothing(self):
        theirs = OTHER["loras"][0]
        _, their_prompt = self.job(who=OTHER)
        self.assertLoaded(self.comfy.submit(graph(user_node(theirs["id"])), their_prompt), theirs["sha256"])  # cached now
        loads = len(comfy.utils.LOADS)
        refused = stats()["nodeFailures"].get("LORA_NOT_FOUND", 0)
        _, prompt_id = self.job(who=USER)
        with self.assertLogs(LOG, level="WARNING") as logs:
            result = self.comfy.submit(graph(user_node(theirs["id"])), prompt_id)  # same graph, same node object
        self.assertEqual(self.loaded(result), ([], []))
        self.assertEqual(len(comfy.utils.LOADS), loads)
        self.assertEqual(len(logs.output), 1)
        self.assertRegex(logs.output[0], r"\[EmProps\] LoRA user:%s not loaded \(LORA_NOT_FOUND\)" % theirs["id"])
        self.assertEqual(stats()["nodeFailures"]["LORA_NOT_FOUND"], refused + 1)

    def test_a_submitted_is_changed_cannot_pin_another_users_output(self):
        mine = USER["loras"][0]
        _, prompt_id = self.job(who=USER)
        prompt = graph(user_node(mine["id"]))
        prompt["2"]["is_changed"] = "pinned"
        self.assertLoaded(self.comfy.submit(prompt, prompt_id), mine["sha256"])
        _, other_prompt = self.job(who=OTHER)
        prompt = graph(user_node(mine["id"]))
        prompt["2"]["is_changed"] = "pinned"
        with self.assertLogs(LOG, level="WARNING"):
            self.assertEqual(self.loaded(self.comfy.submit(prompt, other_prompt)), ([], []))

    def test_user_lora_without_a_registered_job(self):
        with self.assertLogs(LOG, level="WARNING") as logs:
            result = self.comfy.submit(graph(user_node(USER["loras"][0]["id"])), "unregistered-prompt")
        self.assertEqual(self.loaded(result), ([], []))
        self.assertIn("(JOB_NOT_FOUND)", logs.output[0])

    def test_a_user_lora_under_a_registered_loras_folder_is_refused(self):
        # An operator's extra_model_paths.yaml adding a root above the agent's users folder would let
        # ComfyUI's stock LoraLoader list every user's files: the node refuses to load from there.
        _, prompt_id = self.job()
        mine = USER["loras"][0]
        self.assertLoaded(self.comfy.submit(graph(user_node(mine["id"])), prompt_id), mine["sha256"])
        folder_paths.add_model_folder_path("loras", os.path.join(FIXTURE["comfyDir"], "models"))  # holds lora-vault-users/
        try:
            _, prompt_id = self.job()
            with self.assertLogs(LOG, level="WARNING") as logs:
                result = self.comfy.submit(graph(user_node(mine["id"])), prompt_id)
            self.assertEqual(self.loaded(result), ([], []))
            self.assertIn("(USER_LORAS_EXPOSED)", logs.output[0])
        finally:
            folder_paths.folder_names_and_paths["loras"][0].pop()

    def test_a_node_of_another_instance_gets_nothing(self):
        _, prompt_id = self.job()
        loader.set_config(live_config(instance="other-comfy"))
        with self.assertLogs(LOG, level="WARNING") as logs:
            result = self.comfy.submit(graph(user_node(USER["loras"][0]["id"])), prompt_id)
        self.assertEqual(self.loaded(result), ([], []))
        self.assertIn("(JOB_NOT_FOUND)", logs.output[0])


class RogueAnswers(NodeTestCase):
    """Whatever answers on the agent's address (another local process bound to the port first, a
    misconfigured agent), the node loads only the file it asked for, where the agent keeps it: a user
    LoRA at {USER_LORA_DIR}/{user uuid}/{lora id}_….safetensors|pt, a shared one at {a loras folder}/{name}."""

    def rogue(self, path):
        """A process on a loopback port answering every /node/ensure with `path`; the node pointed at it."""
        import http.server
        import json

        class Answer(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                body = json.dumps({"path": path, "hit": True}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        loader.set_config(live_config(agent_url="http://127.0.0.1:%d" % server.server_address[1]))

    def cached(self, who, lora):
        """The real agent's path of `lora` (cached for `who`)."""
        return AGENT.client.call("POST", "/ensure", {"source": "user", "id": lora["id"], "grant": who["grant"], "lease": False})["path"]

    def assertRefused(self, node, expected_code="UNEXPECTED_PATH"):
        loads = len(comfy.utils.LOADS)
        with self.assertLogs(LOG, level="WARNING") as logs:
            result = mini_comfy.MiniComfy().submit(graph(node), "any-prompt")
        self.assertEqual(self.loaded(result), ([], []))
        self.assertEqual(len(comfy.utils.LOADS), loads)
        self.assertIn("(%s)" % expected_code, logs.output[0])
        return logs.output[0]

    def test_a_user_lora_answered_outside_the_user_lora_folder_is_refused(self):
        self.rogue(FIXTURE["sharedFile"])  # an existing safetensors file elsewhere on the machine
        line = self.assertRefused(user_node(USER["loras"][0]["id"]))
        self.assertIn(FIXTURE["sharedFile"], line)

    def test_another_lora_file_in_the_user_lora_folder_is_refused(self):
        theirs = self.cached(OTHER, OTHER["loras"][0])
        self.rogue(theirs)  # another user's cached file, answered for my LoRA id
        self.assertRefused(user_node(USER["loras"][0]["id"]))

    def test_a_shared_lora_answered_outside_the_loras_folder_or_under_another_name_is_refused(self):
        mine = self.cached(USER, USER["loras"][0])
        node = {"class_type": "LoraVault_Lora_Loader",
                "inputs": {"lora_source": "shared", "lora_identifier": SHARED["name"], "strength_model": 1, "strength_clip": 1}}
        loras = os.path.join(FIXTURE["comfyDir"], "models", "loras")
        for answer in (mine, os.path.join(loras, "..", os.path.relpath(mine, os.path.dirname(loras))), FIXTURE["sharedFile"]):
            self.rogue(answer)
            self.assertRefused(node)

    def test_a_user_lora_folder_other_than_the_agents_is_refused_loudly(self):
        # USER_LORA_DIR differs between the agent and ComfyUI: nothing is loaded, and the line says why
        _, prompt_id = self.job()
        loader.set_config(live_config(user_lora_dir=os.path.join(FIXTURE["comfyDir"], "elsewhere")))
        with self.assertLogs(LOG, level="WARNING") as logs:
            result = self.comfy.submit(graph(user_node(USER["loras"][0]["id"])), prompt_id)
        self.assertEqual(self.loaded(result), ([], []))
        self.assertIn("(UNEXPECTED_PATH)", logs.output[0])
        self.assertIn("USER_LORA_DIR", logs.output[0])


class AgentDown(NodeTestCase):
    def test_fallback_is_logged_then_counted_once_the_agent_is_back(self):
        before = stats()["nodeFailures"].get("AGENT_UNAVAILABLE", 0)
        _, prompt_id = self.job()
        loader.set_config(live_config(agent_url=FIXTURE["deadUrl"]))
        with self.assertLogs(LOG, level="WARNING") as logs:
            result = self.comfy.submit(graph(user_node(USER["loras"][0]["id"])), prompt_id)
        self.assertEqual(self.loaded(result), ([], []))
        self.assertEqual(len(logs.output), 1)
        self.assertRegex(logs.output[0], r"\[EmProps\] LoRA user:\d+ not loaded \(AGENT_UNAVAILABLE\).*continuing without it")
        loader.set_config(live_config())
        _, prompt2 = self.job()
        self.assertLoaded(mini_comfy.MiniComfy().submit(graph(user_node(USER["loras"][0]["id"])), prompt2), USER["loras"][0]["sha256"])
        self.assertEqual(stats()["nodeFailures"].get("AGENT_UNAVAILABLE", 0), before + 1)

    def test_missed_failures_are_counted_once_even_when_the_next_answer_is_a_refusal(self):
        before = stats()["nodeFailures"].get("AGENT_UNAVAILABLE", 0)
        _, prompt_id = self.job()
        loader.set_config(live_config(agent_url=FIXTURE["deadUrl"]))
        with self.assertLogs(LOG, level="WARNING"):
            self.comfy.submit(graph(user_node(USER["loras"][0]["id"])), prompt_id)
        loader.set_config(live_config())
        with self.assertLogs(LOG, level="WARNING"):  # the agent answers, refusing: no registered job
            self.comfy.submit(graph(user_node(USER["loras"][0]["id"])), "no-such-prompt")
        _, prompt2 = self.job()
        self.assertLoaded(mini_comfy.MiniComfy().submit(graph(user_node(USER["loras"][0]["id"])), prompt2), USER["loras"][0]["sha256"])
        self.assertEqual(stats()["nodeFailures"].get("AGENT_UNAVAILABLE", 0), before + 1)

    def test_strict_mode_fails_the_job(self):
        _, prompt_id = self.job()
        loader.set_config(live_config(agent_url=FIXTURE["deadUrl"], strict=True))
        with self.assertLogs(LOG, level="ERROR"), self.assertRaises(loader.LoraUnavailable) as raised:
            self.comfy.submit(graph(user_node(USER["loras"][0]["id"])), prompt_id)
        self.assertIn("AGENT_UNAVAILABLE", str(raised.exception))

    def test_shared_lora_already_in_models_loras_still_loads_from_disk(self):
        import os
        import shutil

        local = os.path.join(FIXTURE["comfyDir"], "models", "loras", "local-only.safetensors")
        shutil.copyfile(FIXTURE["sharedFile"], local)
        loader.set_config(live_config(agent_url=FIXTURE["deadUrl"]))
        node = {"class_type": "EmProps_Lora_Loader", "inputs": {"lora_name": "local-only.safetensors", "strength_model": 1, "strength_clip": 1}}
        with self.assertLogs(LOG, level="WARNING") as logs:
            result = self.comfy.submit(graph(node), "no-job")
        self.assertEqual(comfy.utils.LOADS[-1][0], local)
        self.assertEqual(len(self.loaded(result)[0]), 1)
        self.assertIn("AGENT_UNAVAILABLE", logs.output[0])


class Leases(NodeTestCase):
    def test_released_at_job_end(self):
        job_id, prompt_id = self.job()
        self.comfy.submit(graph(user_node(USER["loras"][0]["id"])), prompt_id)
        self.assertEqual(len(job_leases(job_id)), 1)
        self.assertEqual(AGENT.end(job_id, USER["grant"]), {"released": 1, "ended": True})
        self.assertEqual(job_leases(job_id), [])
        self.jobs.pop()

    def test_another_grant_cannot_end_a_job(self):
        job_id, prompt_id = self.job()
        self.comfy.submit(graph(user_node(USER["loras"][0]["id"])), prompt_id)
        self.assertEqual(AGENT.end(job_id, OTHER["grant"]), {"released": 0, "ended": False})
        self.assertEqual(len(job_leases(job_id)), 1)

    def test_expire_when_the_runner_dies(self):
        job_id, prompt_id = self.job(ttl_seconds=2)
        self.jobs.pop()  # the runner "dies": nobody ends the job
        self.comfy.submit(graph(user_node(USER["loras"][1]["id"])), prompt_id)
        leases = job_leases(job_id)
        self.assertEqual(len(leases), 1)
        self.assertLessEqual(leases[0][1], time.time() * 1000 + 2500)
        time.sleep(max(0, leases[0][1] / 1000 - time.time()) + 0.3)
        self.assertEqual(job_leases(job_id), [])
        with self.assertLogs(LOG, level="WARNING") as logs:
            mini_comfy.MiniComfy().submit(graph(user_node(USER["loras"][1]["id"])), prompt_id)
        self.assertIn("(JOB_NOT_FOUND)", logs.output[0])


class PromptIdFallbacks(NodeTestCase):
    def test_older_comfyui_without_execution_context_uses_last_prompt_id(self):
        saved = mini_comfy.without_execution_context()
        try:
            _, prompt_id = self.job()
            comfy_old = mini_comfy.MiniComfy(with_context=False)
            self.assertLoaded(comfy_old.submit(graph(user_node(USER["loras"][0]["id"])), prompt_id), USER["loras"][0]["sha256"])
        finally:
            import sys

            sys.modules["comfy_execution.utils"] = saved

    def test_a_prompt_id_bound_after_submission_is_waited_for(self):
        job_id, _ = new_ids()
        AGENT.register(job_id, USER["grant"], instance="comfy-test")
        self.jobs.append((AGENT, job_id, USER["grant"]))
        comfy_prompt = "comfy-chosen-" + job_id
        threading.Timer(0.3, lambda: AGENT.bind(job_id, USER["grant"], comfy_prompt)).start()
        self.assertLoaded(self.comfy.submit(graph(user_node(USER["loras"][0]["id"])), comfy_prompt), USER["loras"][0]["sha256"])


class Registration(NodeTestCase):
    def test_the_runner_example_end_to_end_grant_register_prompt_end(self):
        import run_job

        job_id, prompt_id = new_ids()
        grant = run_job.create_job_grant(FIXTURE["apiUrl"], FIXTURE["serviceToken"], USER["userId"], job_id, ttl_seconds=600)
        AGENT.register(job_id, grant, prompt_id=prompt_id, instance="comfy-test")
        try:
            self.assertLoaded(self.comfy.submit(graph(user_node(USER["loras"][0]["id"])), prompt_id), USER["loras"][0]["sha256"])
            self.assertEqual(len(job_leases(job_id)), 1)
        finally:
            self.assertEqual(AGENT.end(job_id, grant), {"released": 1, "ended": True})
        self.assertEqual(job_leases(job_id), [])

    def test_prefetch_at_registration_holds_the_workflows_loras(self):
        job_id, prompt_id = new_ids()
        answer = AGENT.register(job_id, USER["grant"], prompt_id=prompt_id, workflow=graph(user_node(USER["loras"][0]["id"])))
        self.jobs.append((AGENT, job_id, USER["grant"]))
        self.assertEqual([item["result"]["loraId"] for item in answer["prefetch"]["items"]], [USER["loras"][0]["id"]])
        self.assertEqual(len(job_leases(job_id)), 1)

    def test_a_prompt_id_of_another_live_job_is_refused(self):
        _, prompt_id = self.job()
        with self.assertRaises(Exception) as raised:
            AGENT.register("job-thief", OTHER["grant"], prompt_id=prompt_id)
        self.assertEqual(raised.exception.code, "INVALID_REQUEST")


if __name__ == "__main__":
    unittest.main()
