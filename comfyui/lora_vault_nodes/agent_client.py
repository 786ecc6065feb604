"""A small client of the cache agent's local interface: standard library only, TCP or AF_UNIX."""

import http.client
import json
import socket
from urllib.parse import urlsplit

AGENT_UNAVAILABLE = "AGENT_UNAVAILABLE"


class AgentCallError(Exception):
    """The agent answered an error ({error: {code, message}}), or could not be reached (AGENT_UNAVAILABLE)."""

    def __init__(self, code, message, status=None):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        # The agent checks no Host on its socket; "localhost" is what is sent.
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class AgentClient:
    """One connection per call (a loopback connect costs ~0.1 ms; no keep-alive state to go stale)."""

    def __init__(self, config):
        self.config = config
        if config.agent_socket:
            self.address = "unix:" + config.agent_socket
        else:
            url = urlsplit(config.agent_url)
            if url.scheme != "http" or not url.hostname:
                raise ValueError("LORA_VAULT_AGENT_URL must be http://host:port, got %r" % config.agent_url)
            self._host, self._port = url.hostname, url.port or 80
            self.address = "http://%s:%d" % (self._host, self._port)

    def _connection(self, timeout):
        if self.config.agent_socket:
            return _UnixConnection(self.config.agent_socket, timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def call(self, method, path, body=None, timeout=None):
        """The JSON answer of `method path`; raises AgentCallError."""
        conn = self._connection(self.config.connect_timeout)
        try:
            try:
                conn.connect()
                conn.sock.settimeout(timeout or self.config.ensure_timeout)
                payload = None if body is None else json.dumps(body).encode("utf-8")
                headers = {"content-type": "application/json"} if payload is not None else {}
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as exc:
                raise AgentCallError(AGENT_UNAVAILABLE, "the agent at %s is unreachable (%s)" % (self.address, str(exc) or type(exc).__name__))
        finally:
            conn.close()
        try:
            answer = json.loads(raw.decode("utf-8")) if raw else {}
        except ValueError:
            raise AgentCallError(AGENT_UNAVAILABLE, "the agent at %s answered %d with no JSON" % (self.address, response.status), response.status)
        if response.status >= 400:
            error = answer.get("error") if isinstance(answer, dict) else None
            error = error if isinstance(error, dict) else {}
            raise AgentCallError(str(error.get("code") or "HTTP_%d" % response.status), str(error.get("message") or ""), response.status)
        return answer
