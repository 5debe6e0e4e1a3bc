"""What every turn event sends the page: the outputs in order, the buttons, and which visitors' turns are running.

A turn whose rewards are hidden (blind judging) is shown through `blind.shown`, so none of them leaves the server.
"""
from __future__ import annotations

import functools
import inspect

import gradio as gr

from .blind import shown
from .cards import MAX_CARDS, USE, card_updates, card_views, use_buttons
from .live import placeholder, unwatch, watch
from .ranking import ranking_html
from .render import chat_messages, turn_summary
from .sharing import jobs_of

# Visitors (session hashes) whose turn is being generated and scored, and those of them who pressed Stop.
RUNNING: set[str] = set()
STOP_REQUESTS: set[str] = set()
BUSY = "The candidates are still being generated or scored: wait for them (or press Stop), then try again."
# A probe runs beside the turns' queue: what it keeps would undo a turn or a scoring that ended meanwhile.
STILL_RUNNING = "Your probe or attribution is still running: wait for it to end, then try again."
# Outputs of every turn event, in order: session, chatbot, status, turn JSON, message box, (text, badge) per
# card, the ranking, then each card's reply as rendered Markdown (added last: API callers' positions stay valid).
# All are values, never property updates, which Gradio turns into a new component and config per output and frame
# (gr.skip() included); a streamed value goes to the page as a diff against the previous frame, so what did not
# change costs nothing. Buttons are set by `actions`, when a turn is asked for and when it ends.
OUTPUTS = 5 + 2 * MAX_CARDS + 1 + MAX_CARDS
# The status line, the turn JSON, the message box, the cards' texts.
STATUS, SUMMARY, MESSAGE, TEXTS = 2, 3, 4, range(5, 5 + 2 * MAX_CARDS, 2)
# What the page's own turn events send: every output but the turn JSON, which is for scripts, and the message box,
# which the page empties itself as it sends (a box that is an output of a running event takes no other update
# until it ends; see `page_frames`).
PAGE_FRAME = [i for i in range(OUTPUTS) if i not in (SUMMARY, MESSAGE)]
REGENERATE = "↻ Regenerate"
BUSY_LABELS = ("Generating…", REGENERATE, *[USE] * MAX_CARDS)  # the labels of `actions(busy=True)`


def page_frames(handler):
    """`handler`'s frames as the page's own events send them: PAGE_FRAME, the buttons of `actions`, the message to
    give back to the box when the turn was refused or failed ("" otherwise), and the live cards' value.

    While the turn is generated, a frame goes only when the status line changes: each frame costs the page work for
    every component on it, so the live cards pull the replies themselves (`live`). Until the turn is scored the
    cards' texts stay as the page sent them and the buttons keep their labels; the frame that brings the scored turn
    sets the buttons too, so that the status line never says "Scored" beside a Send that still says "Generating…".
    """
    signature = inspect.signature(handler)

    @functools.wraps(handler)
    def frames(*args, **kwargs):
        sent = signature.bind(*args, **kwargs).arguments
        try:
            yield from page_outputs(handler(*args, **kwargs), sent)
        finally:  # the turn the page asked for has ended, whichever way: a Stop for it is spent
            STOP_REQUESTS.discard(getattr(sent.get("request"), "session_hash", None))

    return frames


def page_outputs(frames, sent: dict):
    """Each of a turn handler's `frames` that `page_frames` sends, as it sends it, given the handler's arguments
    `sent`."""
    key, status = None, None
    try:
        for outputs in frames:
            session = outputs[0]
            turn = current_turn(session) if isinstance(session, dict) and "turns" in session else False
            ended = turn is not False and (turn is None or turn.get("rewards") is not None)
            if ended:  # scored, or failed and back as it was
                buttons, live = actions(session), ""
            elif turn is False:  # refused: the conversation as it was, undoing what the page showed as it asked
                outputs = view(sent["session"], gr.skip(), outputs[MESSAGE])
                buttons, live = actions(sent["session"]), ""
            elif outputs[STATUS] == status:  # generating, and the live cards show how far
                continue
            else:
                status, key = outputs[STATUS], key or watch(turn)
                buttons, live = list(BUSY_LABELS), placeholder(turn["settings"]["n"], key)
            if not ended:  # the cards' texts as the page sent them: an edit in one stays until it is scored
                outputs = [sent.get(f"candidate_{(i - TEXTS.start) // 2 + 1}", "") if i in TEXTS else output
                           for i, output in enumerate(outputs)]
            given_back = outputs[MESSAGE] if isinstance(outputs[MESSAGE], str) else ""
            yield [outputs[i] for i in PAGE_FRAME] + buttons + [given_back, live]
    finally:
        unwatch(key)


def running(request: gr.Request | None) -> bool:
    """Whether this visitor's turn is running: then other actions on the conversation would be overwritten."""
    visitor = getattr(request, "session_hash", None)
    return visitor is not None and visitor in RUNNING


def busy(request: gr.Request | None) -> bool:
    """Whether this visitor has a turn running or still waiting in the queue: a turn that starts later carries
    the conversation as it was when it was asked for, so a change made meanwhile would be lost."""
    visitor = getattr(request, "session_hash", None)
    if visitor is None or running(request):
        return visitor is not None
    app = getattr(getattr(request, "request", None), "app", None)
    queue = getattr(app.get_blocks(), "_queue", None) if hasattr(app, "get_blocks") else None
    return bool(queue and jobs_of(queue, visitor, "gpu"))


def new_session() -> dict:
    return {"turns": []}


def current_turn(session: dict) -> dict | None:
    return session["turns"][-1] if session["turns"] else None


def view(session: dict, status, message=None) -> list:
    """All outputs of a turn event (see OUTPUTS). The message box is left alone unless `message` is given (a
    visitor may be typing the next one)."""
    turn = shown(current_turn(session))
    return [session, chat_messages(session["turns"]), status, turn_summary(turn),
            gr.skip() if message is None else message, *card_updates(turn), ranking_html(turn),
            *card_views(turn)]


def actions(session: dict | None, busy: bool = False) -> list:
    """Send, Regenerate and the cards' "Use this reply" buttons: off while a turn runs, else ready, the chosen
    card's saying so (set when a turn is asked for and when it ends, not once per frame)."""
    return [gr.update(value="Generating…" if busy else "Send", interactive=not busy),
            gr.update(value=REGENERATE, interactive=not busy),
            *use_buttons(None if busy else current_turn(session), busy)]


def unchanged(warning: str, message: str | None = None) -> list:
    """Warn, and leave every output as it is; but give `message` back to the message box, which the page empties
    when it sends (`page.KEEP_MESSAGE`)."""
    gr.Warning(warning)
    outputs = [gr.skip()] * OUTPUTS
    if message is not None:
        outputs[MESSAGE] = message
    return outputs
