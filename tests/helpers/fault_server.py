"""A small OpenAI-compatible chat server on 127.0.0.1 with scriptable faults, for testing the teacher client.

It implements ``POST /v1/chat/completions`` only. Every request is identified by the SHA-256 of its
``messages`` (canonical JSON); the server records, per identity, how often it arrived and how often it was
answered successfully, plus the arrival time of every hit. Faults are scripted per request: a request whose
messages contain a given substring receives the scripted faults in order on its successive arrivals, then
normal answers.

    with FaultServer(latency=0.2) as server:
        server.script("question 3", [Fault.rate_limit(retry_after=1), Fault.error(500), Fault.malformed()])
        ... point an OpenAI client at server.base_url ...
        assert server.successes[request_key(messages)] == 1

Run ``python tests/fault_server.py --port 8123 --latency 0.2`` to keep one up by hand.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def request_key(messages: list[dict]) -> str:
    """Identity of a request as the server sees it: SHA-256 of the canonical JSON of its messages."""
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class Fault:
    """One scripted reaction to one arrival of a request."""

    kind: str  # "status" | "stall" | "malformed" | "no_choices" | "null_content" | "drop"
    status: int = 0
    retry_after: str | None = None  # raw Retry-After header value
    seconds: float = 0.0  # for "stall"
    echo_auth: bool = False  # put the received Authorization header into the error body (key-hygiene tests)

    @classmethod
    def rate_limit(cls, retry_after: float | str | None = None) -> Fault:
        return cls("status", status=429, retry_after=None if retry_after is None else str(retry_after))

    @classmethod
    def error(cls, status: int = 500, echo_auth: bool = False) -> Fault:
        return cls("status", status=status, echo_auth=echo_auth)

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """Hold the connection for ``seconds`` (longer than the client timeout), then close it unanswered."""
        return cls("stall", seconds=seconds)

    @classmethod
    def malformed(cls) -> Fault:
        """HTTP 200 whose body is not JSON."""
        return cls("malformed")

    @classmethod
    def no_choices(cls) -> Fault:
        return cls("no_choices")

    @classmethod
    def null_content(cls) -> Fault:
        return cls("null_content")

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without any response."""
        return cls("drop")


@dataclass
class Hit:
    key: str
    arrived: float  # time.monotonic() at arrival
    outcome: str  # "ok" or the fault kind/status
    authorization: str | None = None
    n: int = 1  # choices asked for


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a burst of concurrent connections (the socketserver default backlog is 5)


@dataclass
class _Script:
    match: str
    faults: list[Fault]
    used: int = 0


class FaultServer:
    """Threaded HTTP server; start with ``start()`` or as a context manager."""

    def __init__(self, latency: float = 0.0, host: str = "127.0.0.1", port: int = 0, reply=None, n_mode="ignore"):
        self.latency = latency
        self.reply = reply  # optional callable(messages) -> answer text; default echoes the last message
        # what a request with n > 1 gets: "ignore" (one choice, like servers without `n`), "honour" (n choices,
        # choice j > 0 ends with " [choice j]") or "reject" (HTTP 400)
        self.n_mode = n_mode
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._scripts: list[_Script] = []
        self.hits: list[Hit] = []
        self.arrivals: Counter[str] = Counter()
        self.successes: Counter[str] = Counter()
        self.messages_by_key: dict[str, list[dict]] = {}
        self._hold_after: int | None = None
        self._release = threading.Event()
        self.held = 0
        self._admitted = 0
        self._httpd = _HTTPServer((host, port), self._handler_class())
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- scripting
    def script(self, match: str, faults: list[Fault]) -> None:
        """Requests whose messages contain ``match`` get ``faults`` on their first arrivals, in order."""
        with self._lock:
            self._scripts.append(_Script(match, list(faults)))

    def hold_after(self, n_successes: int) -> None:
        """Answer the first ``n_successes`` requests normally; hold every later one until :meth:`release`.

        Held requests are then closed without an answer, so the server's success counts stay exact even
        when the client was killed meanwhile (a deterministic 'crash in the middle' point)."""
        with self._lock:
            self._hold_after = n_successes

    def release(self) -> None:
        self._release.set()

    def reset_counts(self) -> None:
        with self._lock:
            self.hits.clear()
            self.arrivals.clear()
            self.successes.clear()

    def hold_from_now_after(self, n_more: int) -> None:
        """Like :meth:`hold_after`, counted from now: answer ``n_more`` further requests, hold the rest.
        Re-arms a server whose earlier holds were released."""
        with self._lock:
            self._hold_after = self._admitted + n_more
            self._release.clear()

    def stop_holding(self) -> None:
        """Close every held request unanswered and answer everything normally from now on."""
        with self._lock:
            self._hold_after = None
        self._release.set()

    @property
    def total_hits(self) -> int:
        return len(self.hits)

    def arrival_times(self, key: str) -> list[float]:
        with self._lock:
            return [h.arrived for h in self.hits if h.key == key]

    def outcomes(self, key: str) -> list[str]:
        with self._lock:
            return [h.outcome for h in self.hits if h.key == key]

    # ---------------------------------------------------------------- request handling
    def _next_fault(self, text: str) -> Fault | None:
        for s in self._scripts:
            if s.match in text and s.used < len(s.faults):
                s.used += 1
                return s.faults[s.used - 1]
        return None

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # headers and body leave in one segment...
            disable_nagle_algorithm = True  # ...and at once (else delayed ACKs add ~40 ms per request)

            def log_message(self, format, *args):  # keep test output clean
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def do_GET(self):
                if self.path.rstrip("/") in ("/health", "/v1/models"):
                    self._send(200, b'{"object":"list","data":[]}')
                else:
                    self._send(404, b'{"error":{"message":"not found"}}')

            def do_POST(self):
                arrived = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, b'{"error":{"message":"only /v1/chat/completions is served"}}')
                    return
                try:
                    payload = json.loads(raw)
                    messages = payload["messages"]
                except (ValueError, KeyError, TypeError):
                    self._send(400, b'{"error":{"message":"body is not a chat completion request"}}')
                    return
                key = request_key(messages)
                text = json.dumps(messages, ensure_ascii=False)
                auth = self.headers.get("Authorization")
                n = payload.get("n") or 1
                if n > 1 and server.n_mode == "reject":
                    with server._lock:
                        server.hits.append(Hit(key, arrived, "n_rejected", auth, n))
                    self._send(400, b'{"error":{"message":"n > 1 is not supported"}}')
                    return
                with server._lock:
                    fault = server._next_fault(text)
                    hold = fault is None and server._hold_after is not None and server._admitted >= server._hold_after
                    if hold:
                        server.held += 1
                    elif fault is None:
                        server._admitted += 1
                    hit = Hit(key, arrived, "held" if hold else "ok" if fault is None else _label(fault), auth, n)
                    server.hits.append(hit)
                    server.arrivals[key] += 1
                    server.messages_by_key.setdefault(key, messages)
                if hold:
                    server._release.wait()
                    self.close_connection = True
                    return
                if server.latency:
                    time.sleep(server.latency)
                if fault is not None:
                    self._fault(fault, auth)
                    return
                last = messages[-1].get("content", "") if messages else ""
                content = server.reply(messages) if server.reply else f"Answer to: {last}"
                contents = [content] + [f"{content} [choice {j}]" for j in range(1, n if server.n_mode == "honour" else 1)]
                body = {
                    "id": f"chatcmpl-{key[:12]}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": payload.get("model", "fault-server"),
                    "choices": [
                        {"index": j, "message": {"role": "assistant", "content": c}, "finish_reason": "stop"}
                        for j, c in enumerate(contents)
                    ],
                    "usage": {
                        "prompt_tokens": len(text.split()),
                        "completion_tokens": sum(len(c.split()) for c in contents),
                        "total_tokens": len(text.split()) + sum(len(c.split()) for c in contents),
                    },
                }
                try:
                    self._send(200, json.dumps(body).encode())
                except OSError:  # client went away: not answered
                    hit.outcome = "lost"
                    return
                with server._lock:
                    server.successes[key] += 1

            def _fault(self, fault: Fault, auth: str | None) -> None:
                if fault.kind == "status":
                    message = f"scripted error {fault.status}"
                    if fault.echo_auth:
                        message += f" (you sent Authorization: {auth})"
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                    self._send(fault.status, json.dumps({"error": {"message": message}}).encode(), headers)
                elif fault.kind == "stall":
                    server._stopping.wait(fault.seconds)
                    self.close_connection = True
                elif fault.kind == "drop":
                    self.close_connection = True
                elif fault.kind == "malformed":
                    self._send(200, b'{"id": "chatcmpl-x", "choices": [ {"message": <<garbage>>')
                elif fault.kind == "no_choices":
                    body = {"id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}
                    self._send(200, json.dumps(body).encode())
                elif fault.kind == "null_content":
                    body = {
                        "id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": "m",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": None},
                                     "finish_reason": "stop"}],
                    }
                    self._send(200, json.dumps(body).encode())
                else:  # pragma: no cover - programming error in a test
                    raise ValueError(f"unknown fault kind {fault.kind!r}")

        return Handler


def _label(fault: Fault) -> str:
    return str(fault.status) if fault.kind == "status" else fault.kind


if __name__ == "__main__":  # pragma: no cover - manual use
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    srv = FaultServer(latency=args.latency, port=args.port).start()
    print(f"serving on {srv.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        srv.stop()
