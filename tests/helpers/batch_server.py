"""A loopback fake of OpenAI's files and batches endpoints (plus live chat completions), for the batch teacher.

Endpoints: ``POST /v1/files`` (multipart upload), ``GET /v1/files/{id}/content``, ``POST /v1/batches``,
``GET /v1/batches/{id}``, ``GET /v1/batches`` (list) and ``POST /v1/chat/completions`` (live answers, for
lines retried live). A batch stays ``in_progress`` until it has been retrieved ``polls_to_finish`` times
(or until :meth:`BatchServer.finish` when ``manual`` is set), then it completes: every line is answered
``"Answer to: <last message>"`` (the fault server's live answer), except lines whose request contains a
substring in ``fail_lines`` (they go to the error file) and, when ``expire_after`` is set, every line after
the first ``expire_after`` (the batch then ends ``expired`` with those lines unanswered, as OpenAI does).

Counters: ``uploads``, ``batches`` (created, by id), ``retrieves``, ``content_downloads``, ``live_calls``
(list of live request texts).
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def answer(messages: list[dict]) -> str:
    return f"Answer to: {messages[-1].get('content', '') if messages else ''}"


def completion_body(messages: list[dict], model: str, reply=None) -> dict:
    content = (reply or answer)(messages)
    prompt = len(json.dumps(messages, ensure_ascii=False).split())
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": len(content.split()),
                  "total_tokens": prompt + len(content.split())},
    }


@dataclass
class FakeBatch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict | None
    created_at: int
    status: str = "validating"
    polls: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})

    def as_json(self) -> dict:
        return {
            "id": self.id, "object": "batch", "endpoint": self.endpoint, "input_file_id": self.input_file_id,
            "completion_window": self.completion_window, "status": self.status, "created_at": self.created_at,
            "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
            "request_counts": dict(self.counts), "metadata": self.metadata, "errors": None,
        }


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True


class BatchServer:
    def __init__(self, polls_to_finish: int = 2, manual: bool = False, fail_lines: tuple[str, ...] = (),
                 expire_after: int | None = None, reject_batches: bool = False, faulty_batches: int | None = None,
                 reply=None):
        self.reply = reply  # messages -> answer text (default: "Answer to: <last message>")
        self.polls_to_finish = polls_to_finish
        self.manual = manual
        self.fail_lines = tuple(fail_lines)
        self.expire_after = expire_after
        self.reject_batches = reject_batches  # every batch ends "failed" (e.g. a bad input file)
        self.faulty_batches = faulty_batches  # fail_lines / expire_after / reject apply to the first N batches only
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, FakeBatch] = {}
        self.uploads = 0
        self.retrieves = 0
        self.content_downloads = 0
        self.live_calls: list[str] = []
        self._finish: set[str] = set()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._httpd = _HTTPServer(("127.0.0.1", 0), self._handler())
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> BatchServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def finish(self, batch_id: str | None = None) -> None:
        """With ``manual``: let a batch (every batch when None) complete at its next retrieve."""
        with self._lock:
            self._finish.update([batch_id] if batch_id else self.batches)
            if batch_id is None:
                self.manual = False

    def lines_of(self, batch_id: str) -> list[dict]:
        raw = self.files[self.batches[batch_id].input_file_id]
        return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]

    # ---------------------------------------------------------------- batch completion
    def _faulty(self, batch: FakeBatch) -> bool:
        return self.faulty_batches is None or list(self.batches).index(batch.id) < self.faulty_batches

    def _complete(self, batch: FakeBatch) -> None:
        out, err = [], []
        faulty = self._faulty(batch)
        expire = self.expire_after if faulty else None
        for n, line in enumerate(self.lines_of(batch.id)):
            body = line["body"]
            if expire is not None and n >= expire:
                continue  # unanswered when the window closed
            if faulty and any(s in json.dumps(body["messages"]) for s in self.fail_lines):
                err.append({"id": f"req-{n}", "custom_id": line["custom_id"],
                            "response": {"status_code": 500, "request_id": f"r{n}",
                                         "body": {"error": {"message": "scripted line failure", "type": "server_error"}}},
                            "error": None})
                continue
            out.append({"id": f"req-{n}", "custom_id": line["custom_id"], "error": None,
                        "response": {"status_code": 200, "request_id": f"r{n}",
                                     "body": completion_body(body["messages"], body.get("model", "m"), self.reply)}})
        out.reverse()  # output order is not input order (as documented by OpenAI)
        if out:
            batch.output_file_id = self._store("".join(json.dumps(r) + "\n" for r in out).encode())
        if err:
            batch.error_file_id = self._store("".join(json.dumps(r) + "\n" for r in err).encode())
        batch.counts.update(completed=len(out), failed=len(err))
        batch.status = "expired" if expire is not None else "completed"

    def _store(self, data: bytes) -> str:
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = data
        return file_id

    # ---------------------------------------------------------------- HTTP
    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                pass

            def _send(self, status: int, body: bytes | dict, ctype: str = "application/json") -> None:
                if isinstance(body, dict):
                    body = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self):
                path = self.path.split("?")[0].rstrip("/")
                with server._lock:
                    if path == "/v1/batches":
                        data = [b.as_json() for b in reversed(list(server.batches.values()))]
                        self._send(200, {"object": "list", "data": data, "has_more": False,
                                         "first_id": data[0]["id"] if data else None,
                                         "last_id": data[-1]["id"] if data else None})
                    elif path.startswith("/v1/batches/"):
                        batch = server.batches.get(path.rsplit("/", 1)[1])
                        if batch is None:
                            self._send(404, {"error": {"message": "no such batch"}})
                            return
                        server.retrieves += 1
                        batch.polls += 1
                        if batch.status in ("validating", "in_progress"):
                            batch.status = "in_progress"
                            if server.reject_batches and server._faulty(batch):
                                batch.status = "failed"
                            elif (batch.id in server._finish or not server.manual) and \
                                    batch.polls >= server.polls_to_finish:
                                server._complete(batch)
                        self._send(200, batch.as_json())
                    elif path.startswith("/v1/files/") and path.endswith("/content"):
                        file_id = path.split("/")[3]
                        if file_id not in server.files:
                            self._send(404, {"error": {"message": "no such file"}})
                            return
                        server.content_downloads += 1
                        self._send(200, server.files[file_id], "application/octet-stream")
                    else:
                        self._send(404, {"error": {"message": f"not found: {path}"}})

            def do_POST(self):
                path = self.path.split("?")[0].rstrip("/")
                raw = self._body()
                with server._lock:
                    if path == "/v1/files":
                        header = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
                        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + raw)
                        parts = {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()}
                        if "file" not in parts or parts.get("purpose") is None:
                            self._send(400, {"error": {"message": "file and purpose are required"}})
                            return
                        data = parts["file"].get_payload(decode=True)
                        file_id = server._store(data)
                        server.uploads += 1
                        self._send(200, {"id": file_id, "object": "file", "bytes": len(data), "created_at": 0,
                                         "filename": parts["file"].get_filename(), "purpose": "batch",
                                         "status": "processed"})
                    elif path == "/v1/batches":
                        req = json.loads(raw)
                        if req.get("input_file_id") not in server.files or req.get("endpoint") != "/v1/chat/completions":
                            self._send(400, {"error": {"message": "bad batch request"}})
                            return
                        batch = FakeBatch(f"batch_{next(server._ids)}", req["input_file_id"], req["endpoint"],
                                          req["completion_window"], req.get("metadata"), int(time.time()))
                        batch.counts["total"] = len(server.files[req["input_file_id"]].splitlines())
                        server.batches[batch.id] = batch
                        self._send(200, batch.as_json())
                    elif path == "/v1/chat/completions":
                        req = json.loads(raw)
                        server.live_calls.append(req["messages"][-1]["content"])
                        self._send(200, completion_body(req["messages"], req.get("model", "m"), server.reply))
                    else:
                        self._send(404, {"error": {"message": f"not found: {path}"}})

        return Handler
