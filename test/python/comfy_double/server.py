"""Test double of server.PromptServer: the instance attributes nodes read, and on-prompt handlers."""


class PromptServer:
    instance = None

    def __init__(self):
        PromptServer.instance = self
        self.client_id = None
        self.last_node_id = None
        self.on_prompt_handlers = []
        self.sent = []

    def add_on_prompt_handler(self, handler):
        self.on_prompt_handlers.append(handler)

    def trigger_on_prompt(self, json_data):
        for handler in self.on_prompt_handlers:
            json_data = handler(json_data)
        return json_data

    def send_sync(self, event, data, sid=None):
        self.sent.append((event, data, sid))
