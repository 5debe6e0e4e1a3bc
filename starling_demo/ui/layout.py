"""The page's sections, each a function that places its components and returns them by name: the settings
sidebar, the chat, the candidates (the decision), the analysis tabs and the batch evaluation."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..engine import Engine
from ..limits import max_new_tokens_for
from ..presets import LM_PRESETS, RM_PRESETS
from ..templates import RM_FORMATS
from ..edits import EDITS
from .analysis import COMPARE_HEADERS
from .blind import NOT_JUDGED, TALLY_HEADERS
from .cards import MAX_CARDS, USE
from .evaluation import EVALUATE, NO_COMPARISON
from .live import LIVE_JS, live_cards
from .view import REGENERATE
from .probing import ATTRIBUTION_NOTE, EDIT_CHOICES, NO_AGGREGATE, NO_ATTRIBUTION, NO_PROBES, PROBE_NOTE
from .eval_report import COLUMN_WIDTHS, REPORT_HEADERS
from .ranking import ranking_html

def as_sent(component):
    """`component` with its value handed to the handler as sent, unchecked: the handlers check every value
    (`limits.check_number`, the probe's names) and refuse NaN, infinity, text, null and values out of range with one
    sentence and every output unchanged, where Gradio's own bounds check and rounding would answer first with a
    bare error (or turn 1.5 into 2). Set on the instance: a subclass would make Gradio write a .pyi file beside
    this module at every import."""
    component.preprocess = lambda payload: payload
    return component


INTRO = ("**Starling-LM** writes N replies, a **Starling reward model** ranks them, the best continues the chat "
         "unless you pick another. Settings: ‹ at the top right; why a reply won: below.")
TRACE_NOTE = ("Each token is coloured by **the value the head would give if the reply ended at this token** "
              "(green above zero, red below; hover for the number). The reward itself is read after the reply's "
              "end marker (`</s>` or `<|im_end|>`), so it can differ from the last token's value.")
EVAL_NOTE = ("Upload rows as they come: ours (`{\"messages\": [...], \"candidates\": [best, ..., worst]}` or "
             "`\"chosen\"`/`\"rejected\"`), RewardBench's (`prompt`, `chosen`, `rejected`) or RewardBench 2's "
             "(`chosen` and `rejected` lists; Ties scored as it does), with an optional `subset` and `id`; JSONL, "
             "a JSON array or Parquet. **Pairwise** accuracy is the share of pairs ranked right (chance 0.5); "
             "**best-of-K** the share of rows whose chosen answer outscores every rejected one (chance 1/K). Beside "
             "each: the 95% bootstrap interval, what judging by length alone scores (longer wins, shorter wins), the "
             "accuracy where the chosen answer is the longer one and where it is the shorter one, and their mean, "
             "the **length-balanced** accuracy, on which length alone scores exactly chance.")


# Undoing clicks of the cards' "Rank next", handled in the page alone (assets/page.js).
JUDGE_TOOLS = ("<div class='judge-tools'><button type='button' data-action='unrank-last'>↶ Undo last</button>"
               "<button type='button' data-action='unrank-all'>Start over</button></div>")


def model_choices(engine: Engine, kind: str) -> list[str]:
    """What visitors may choose: the server's allowed models, else every preset plus the launched one."""
    if engine.allowed is not None:
        return list(engine.allowed[kind])
    presets, current = (LM_PRESETS, engine.lm_name) if kind == "lm" else (RM_PRESETS, engine.rm_name)
    return list(presets) + ([current] if current not in presets else [])


def model_dropdown(engine: Engine, kind: str, label: str) -> gr.Dropdown:
    choices = model_choices(engine, kind)
    info = ("Shared: switching loads it for every visitor of this server." if len(choices) > 1
            else "Set by the server.")
    return gr.Dropdown(choices, value=engine.lm_name if kind == "lm" else engine.rm_name, label=label, info=info,
                       interactive=len(choices) > 1, elem_id=kind)


def settings_sidebar(engine: Engine) -> SimpleNamespace:
    """Models and sampling, in a sidebar that stays closed until asked for and leaves no hole when it is."""
    with gr.Sidebar(open=False, position="right", elem_id="settings", width=340):
        gr.Markdown("### Settings")
        lm = model_dropdown(engine, "lm", "Language model")
        rm = model_dropdown(engine, "rm", "Reward model")
        n = as_sent(gr.Slider(1, MAX_CARDS, value=4, step=1, label="Candidates per turn (N)", elem_id="n"))
        temperature = as_sent(gr.Slider(0, 2, value=0.7, step=0.05, label="Temperature (0 = greedy)",
                                        elem_id="temperature"))
        top_p = as_sent(gr.Slider(0.05, 1, value=1.0, step=0.05, label="top_p"))
        longest = max_new_tokens_for(engine.context())
        max_new_tokens = as_sent(gr.Slider(1, longest, value=min(64 if engine.lm_name == "tiny" else 512, longest),
                                           step=1, label="Max new tokens", elem_id="max-tokens"))
        seed = gr.Textbox("", label="Seed (blank = random; the seed used is shown in the status line)",
                          elem_id="seed")
        mode = gr.Radio(["GPT4 Correct", "Code"], value="GPT4 Correct", label="Template mode")
        system = gr.Textbox("", label="System prompt (optional)", lines=2, elem_id="system",
                            info="Sent to the LM and to RM-34B; RM-7B-alpha sees it only in RewardBench's text.")
        readout = gr.Radio(["card", "last-token"], value="card", label="Reward read-out", elem_id="readout",
                           info="card: as the RM-7B card computes it; RM-34B always reads the last token" +
                                ("; the launched RM runs on vLLM, which reads the last token only" if
                                 engine.url("rm") else ""))
        rm_format = gr.Radio(list(RM_FORMATS), value="rlhf", label="Reward-model input text", elem_id="rm-format",
                             info="rlhf: as each RM scored in Starling's RLHF; rewardbench: RewardBench's text "
                                  "(RM-7B: the Llama-2-chat template), to reproduce its numbers")
        rm2 = gr.Dropdown(["none", *model_choices(engine, "rm")], value="none",
                          label="Second reward model (compare rankings)", elem_id="rm2")
    return SimpleNamespace(lm=lm, rm=rm, n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                           seed=seed, mode=mode, system=system, readout=readout, rm_format=rm_format, rm2=rm2)


def chat_section() -> SimpleNamespace:
    """The conversation, tall enough for the last exchange, with the message box and the turn's actions."""
    chatbot = gr.Chatbot(label="Conversation", height=440, sanitize_html=True, elem_id="chat", buttons=["copy"],
                         show_label=False, placeholder="The conversation continues here with the chosen replies.")
    with gr.Row(equal_height=True):
        message = gr.Textbox(show_label=False, placeholder="Message Starling… (Enter sends)", lines=1, max_lines=6,
                             scale=6, elem_id="msg", container=False)
        send = gr.Button("Send", variant="primary", scale=1, min_width=90, elem_id="send")
    with gr.Row(elem_classes="actions"):
        regenerate = gr.Button(REGENERATE, size="sm", elem_id="regenerate", min_width=60)
        stop = gr.Button("■ Stop", size="sm", variant="stop", elem_id="stop", min_width=60)
        undo = gr.Button("↶ Undo turn", size="sm", elem_id="undo", min_width=60)
        clear = gr.Button("Clear", size="sm", elem_id="clear", min_width=60)
        # Clear keeps the session's blind-judging tally and probe results; this resets them too.
        clear_all = gr.Button("Clear all", size="sm", elem_id="clear-all", min_width=60)
    return SimpleNamespace(chatbot=chatbot, message=message, send=send, regenerate=regenerate, stop=stop, undo=undo,
                           clear=clear, clear_all=clear_all)


def candidate_card(i: int) -> SimpleNamespace:
    """One candidate: its badge (rank, reward, who wrote it), a button to continue with it, the reply rendered, and
    its text, edited in place of the rendered reply once the card's ✎ Edit is pressed (assets/page.js)."""
    # Shown while it has a badge (see `cards.card_updates`).
    with gr.Column(elem_classes="card", min_width=260, elem_id=f"candidate-{i}"):
        with gr.Row(equal_height=True, elem_classes="card-head"):
            badge = gr.HTML("", elem_id=f"badge-{i}", elem_classes="badge", js_on_load=None, scale=3)
            use = gr.Button(USE, size="sm", elem_id=f"use-{i}", scale=0, min_width=100)
        # No LaTeX: a "$" in a reply is a dollar sign.
        view = gr.Markdown("", elem_id=f"view-{i}", elem_classes="card-view", container=False, sanitize_html=True,
                           latex_delimiters=[])
        text = gr.Textbox("", label=f"Candidate {i}", show_label=False, lines=8, max_lines=8, interactive=True,
                          elem_id=f"card-{i}", elem_classes="card-edit", container=False, autoscroll=False)
    return SimpleNamespace(text=text, badge=badge, use=use, view=view)


def candidates_section() -> SimpleNamespace:
    """The decision: status, the ranked rewards, the cards two by two, and a reply of your own."""
    with gr.Row(equal_height=True, elem_id="status-row"):
        status = gr.Markdown("Send a message to generate candidates.", elem_id="status")
        blind = gr.Checkbox(False, label="Judge first", elem_id="blind", container=False, scale=0, min_width=120)
    ranking = gr.HTML(ranking_html(None), elem_id="ranking", js_on_load=None)
    # Shown by the stylesheet while a card has "Rank next" (a blind turn waits): in the page from the first, so
    # that no click on the cards is lost before a panel update would show it.
    with gr.Row(equal_height=True, elem_id="judge-row"):
        judge_order = gr.Textbox("", label="Your ranking, best first: press “Rank next” on the cards in order "
                                 "(or type their numbers); the best alone will do", elem_id="judge-order", scale=4,
                                 max_lines=1)
        gr.HTML(JUDGE_TOOLS, elem_id="judge-tools", js_on_load=None, scale=0, min_width=150)
        reveal = gr.Button("Reveal the RM's ranking", variant="primary", scale=1, elem_id="reveal")
    # While a turn is generated, its cards are drawn here and the turn's own cards wait hidden (ui/live.py).
    live = gr.HTML("", elem_id="live", js_on_load=LIVE_JS, server_functions=[live_cards], container=False)
    cards = []
    with gr.Row(elem_classes="cards"):
        for i in range(1, MAX_CARDS + 1):
            cards.append(candidate_card(i))
    with gr.Row(equal_height=True, elem_classes="own-row"):
        own = gr.Textbox(show_label=False, placeholder="Write your own reply to rank it with the others", lines=1,
                         max_lines=6, scale=4, elem_id="own", container=False)
        add = gr.Button("Add & score", size="sm", elem_id="add", min_width=90)
        score = gr.Button("Score all cards", size="sm", elem_id="score", min_width=90)
    return SimpleNamespace(status=status, ranking=ranking, cards=cards, own=own, add=add, score=score, blind=blind,
                           judge_order=judge_order, reveal=reveal, live=live)


def analysis_section(rm_choices: list[str]) -> tuple[SimpleNamespace, SimpleNamespace]:
    """Why one candidate scored higher: per-token trace, win probabilities, length bias, a second RM, exports,
    the exact model inputs; and the batch evaluation. The tabs wrap onto a second row on a phone instead of
    hiding in a menu."""
    with gr.Tabs(overflow_behavior="wrap", elem_id="analysis"):
        with gr.Tab("Compare two", elem_id="tab-compare-two"):
            with gr.Row():
                compare_a = gr.Radio([], label="Left", elem_id="compare-a")
                compare_b = gr.Radio([], label="Right", elem_id="compare-b")
            compare_view = gr.HTML(elem_id="compare-view", js_on_load=None)
        with gr.Tab("Reward trace", elem_id="tab-trace"):
            gr.Markdown(TRACE_NOTE)
            trace_pick = gr.Radio([], label="Candidate", elem_id="trace-pick")
            trace_view = gr.HTML(elem_id="trace", js_on_load=None)
            trace_plot = gr.LinePlot(x="token", y="value", height=220, label="Value along the reply",
                                     x_axis_format="d")
            gr.Markdown(ATTRIBUTION_NOTE)
            attribute = gr.Button("Leave each sentence out", size="sm", elem_id="attribute")
            attribution = gr.HTML(NO_ATTRIBUTION, elem_id="attribution", js_on_load=None)
        with gr.Tab("Win probabilities", elem_id="tab-wins"):
            gr.Markdown("P(row beats column) = sigmoid(r_row − r_col), the Bradley-Terry preference the RM implies.")
            wins = gr.HTML(elem_id="wins", js_on_load=None)
            luce = gr.Markdown(elem_id="luce")
        with gr.Tab("Length bias", elem_id="tab-bias"):
            alpha = as_sent(gr.Slider(0, 5, value=0.5, step=0.1, label="α: reward given up per 100 tokens "
                                      "(length-penalised reward r − α·len/100)"))
            bias_text = gr.Markdown(elem_id="bias")
            # Coloured by kind: the RM's best, the longest, the others (`render.length_frame`, `analysis.bias_panel`);
            # a point's tooltip names its candidate. No `height`: with one and a label, Gradio 6.31 cuts off the
            # plot's bottom, the legend with it.
            bias_plot = gr.ScatterPlot(x="tokens", y="reward", color="role", x_axis_format="d",
                                       label="Reward vs reply length", x_title="reply length (RM tokens)",
                                       y_title="reward", color_title="", tooltip=["candidate"],
                                       elem_id="bias-plot")
        with gr.Tab("Compare RMs", elem_id="tab-compare"):
            compare_text = gr.Markdown(elem_id="compare")
            compare_table = gr.Dataframe(headers=COMPARE_HEADERS, interactive=False, elem_id="compare-table")
        with gr.Tab("Probes", elem_id="tab-probes"):
            probes = probes_tab()
        with gr.Tab("Blind judging", elem_id="tab-judging"):
            gr.Markdown("Tick **Judge first** beside the status line: each turn's rewards stay hidden until you rank "
                        "its candidates (or pick the best); then the RM's ranking is revealed beside yours. Pairs "
                        "count each candidate you ranked above another or above one you left unranked; Kendall τ "
                        "needs a complete ranking.")
            tally_text = gr.Markdown(NOT_JUDGED, elem_id="tally")
            tally_table = gr.Dataframe(headers=TALLY_HEADERS, interactive=False, elem_id="tally-table")
            judged_button = gr.Button("Export your judgements (chosen/rejected by you, with the RM's rewards)",
                                      elem_id="export-judged")
            judged_file = gr.File(label="Download", elem_id="export-judged-file")
        with gr.Tab("Export", elem_id="tab-export"):
            gr.Markdown("JSONL of this session's turns: preference pairs (best vs each other candidate) or "
                        "Nectar-style K-wise rankings, one record per turn.")
            with gr.Row():
                pairs_button = gr.Button("Export chosen/rejected pairs", elem_id="export-pairs")
                nectar_button = gr.Button("Export Nectar K-wise", elem_id="export-nectar")
            export = gr.File(label="Download", elem_id="export-file")
        with gr.Tab("Model inputs", elem_id="tab-inputs"):
            gr.Markdown("The exact text sent to the language model and to the reward model.")
            lm_input = gr.Textbox(label="LM prompt", lines=4, max_lines=20, elem_id="lm-input", buttons=["copy"])
            rm_input = gr.Textbox(label="RM input per candidate", lines=6, max_lines=30, elem_id="rm-input",
                                  buttons=["copy"])
        with gr.Tab("Batch evaluation", elem_id="tab-eval"):
            evaluation = evaluation_section(rm_choices)
    return SimpleNamespace(trace_pick=trace_pick, trace_view=trace_view, trace_plot=trace_plot, wins=wins, luce=luce,
                           alpha=alpha, bias_text=bias_text, bias_plot=bias_plot, compare_text=compare_text,
                           compare_table=compare_table, pairs_button=pairs_button, nectar_button=nectar_button,
                           export=export, lm_input=lm_input, rm_input=rm_input, attribute=attribute,
                           attribution=attribution, probes=probes, tally_text=tally_text, tally_table=tally_table,
                           judged_button=judged_button, judged_file=judged_file, compare_a=compare_a,
                           compare_b=compare_b, compare_view=compare_view), evaluation


def probes_tab() -> SimpleNamespace:
    """A candidate (or all) under the probe edits and your own, and the session's mean change per edit."""
    gr.Markdown(PROBE_NOTE)
    with gr.Row():
        pick = gr.Radio([], label="Candidate", elem_id="probe-pick", scale=2)
        run = gr.Button("Run probes", variant="primary", elem_id="run-probes", scale=1)
    edits = as_sent(gr.CheckboxGroup(EDIT_CHOICES, value=list(EDITS), label="Edits", elem_id="probe-edits"))
    with gr.Accordion("Your own edit", open=False, elem_id="own-edit"):
        with gr.Row():
            prefix = gr.Textbox(label="Put before the reply", elem_id="edit-prefix")
            suffix = gr.Textbox(label="Put after the reply", elem_id="edit-suffix")
        with gr.Row():
            find = gr.Textbox(label="Find (plain text)", elem_id="edit-find")
            replace = gr.Textbox(label="Replace with", elem_id="edit-replace")
    view = gr.HTML(NO_PROBES, elem_id="probe-view", js_on_load=None)
    gr.Markdown("#### Over the session")
    summary = gr.HTML(NO_AGGREGATE, elem_id="probe-aggregate", js_on_load=None)
    return SimpleNamespace(pick=pick, run=run, edits=edits, prefix=prefix, suffix=suffix, find=find, replace=replace,
                           view=view, summary=summary)


def evaluation_section(rm_choices: list[str]) -> SimpleNamespace:
    """Accuracy of the chosen reward model (and, to compare, of a second one) on an uploaded file of ranked or
    chosen/rejected answers: the report, two pictures, each row's result as JSONL, and the malformed rows. Evaluate is
    off while an evaluation runs, Cancel only then (ui/evaluation.py's `starting` and `finished`)."""
    gr.Markdown(EVAL_NOTE)
    file = gr.File(label="Evaluation file (JSONL, JSON array or Parquet)",
                   file_types=[".jsonl", ".json", ".parquet", ".txt"], elem_id="eval-file")
    compare = gr.Dropdown([NO_COMPARISON, *rm_choices], value=NO_COMPARISON, elem_id="eval-compare",
                          label="Compare with a second reward model (scores the file twice)")
    with gr.Row(equal_height=True):
        button = gr.Button(EVALUATE, variant="primary", elem_id="evaluate", scale=4)
        cancel = gr.Button("Cancel", variant="stop", elem_id="cancel-eval", interactive=False, scale=1, min_width=90)
    status = gr.Markdown(elem_id="eval-status")
    report = gr.Dataframe(headers=REPORT_HEADERS, label="Report (each accuracy with its 95% interval)",
                          interactive=False, elem_id="report", wrap=True, column_widths=COLUMN_WIDTHS)
    accuracy = gr.Plot(label="Accuracy per subset", elem_id="eval-accuracy", show_label=False)
    margins = gr.Plot(label="Reward margin against length difference", elem_id="eval-margins", show_label=False)
    rows = gr.File(label="Each row's result (JSONL)", elem_id="eval-rows", interactive=False)
    errors = gr.Textbox(label="Malformed rows", lines=3, interactive=False, elem_id="eval-errors")
    return SimpleNamespace(file=file, compare=compare, button=button, cancel=cancel, status=status, report=report,
                           accuracy=accuracy, margins=margins, rows=rows, errors=errors)
