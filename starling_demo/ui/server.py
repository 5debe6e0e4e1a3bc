"""How the app is served to many visitors: requests and uploads within limits, and one visitor's jobs
never filling the queue for everyone."""
from __future__ import annotations

import gradio as gr
from starlette.middleware import Middleware
from starlette.responses import JSONResponse

from ..limits import MAX_JOBS_PER_VISITOR, MAX_REQUEST_BYTES, MAX_UPLOAD_BYTES

BUSY = {"gpu": "You already have a turn running and a request waiting behind it: wait for them (or press Stop).",
        "eval": "Your evaluation is still running: wait for it to finish, or cancel it, first."}


class RequestLimit:
    """Refuse a request body over MAX_REQUEST_BYTES, by its Content-Length, before it is read and parsed:
    otherwise a 10 MB text costs the server its parsing before the app can say it is too long. Uploads
    have their own limit (`max_file_size`)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        length = dict(scope.get("headers", ())).get(b"content-length", b"0")
        if scope["type"] == "http" and not scope["path"].endswith("/upload") and int(length) > MAX_REQUEST_BYTES:
            detail = (f"The request has {int(length) / 2**20:.1f} MB; this server takes at most "
                      f"{MAX_REQUEST_BYTES // 2**20} MB: shorten the texts (see README's limits).")
            return await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
        return await self.app(scope, receive, send)


def server_kwargs() -> dict:
    """`launch()` arguments that limit uploads and refuse oversized requests."""
    return {"max_file_size": MAX_UPLOAD_BYTES, "app_kwargs": {"middleware": [Middleware(RequestLimit)]}}


def jobs_of(queue, visitor: str, group: str) -> int:
    """How many of `visitor`'s jobs in concurrency group `group` are queued or running in Gradio's `queue`."""
    pending = list(queue.pending_event_ids_session.get(visitor, ()))
    events = [queue.event_ids_to_events.get(event_id) for event_id in pending]
    return sum(1 for event in events if event is not None and event.fn.concurrency_id == group)


def limit_jobs_per_visitor(demo: gr.Blocks) -> None:
    """Refuse a visitor's new GPU or evaluation job, before it is queued, while they have as many of that kind
    queued or running as MAX_JOBS_PER_VISITOR allows: one visitor cannot fill the queue for everyone.

    Gradio has no public hook that runs before queueing without first preprocessing the inputs (a
    validator does, and an input it cannot preprocess then fails with no message), so this wraps the
    queue's `push`, answering as a validator would; tests/test_sharing.py checks it against the real queue.
    """
    queue = demo._queue
    push = queue.push

    async def push_unless_busy(body, request, username):
        fn = demo.fns.get(body.fn_index)
        group = getattr(fn, "concurrency_id", None)
        visitor = body.session_hash
        if group in BUSY and visitor and jobs_of(queue, visitor, group) >= MAX_JOBS_PER_VISITOR[group]:
            # The page shows it under an input: the first text box (the message box, for a turn), else the first.
            answer = [gr.validate(True, "") for _ in fn.inputs]
            shown = next((i for i, block in enumerate(fn.inputs) if isinstance(block, gr.Textbox)), 0)
            answer[shown] = gr.validate(False, BUSY[group]) | {"parameter_name": "queue"}
            return False, answer, "validator_error"
        return await push(body, request, username)

    queue.push = push_unless_busy
