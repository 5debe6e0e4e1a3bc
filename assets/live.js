// The cards of a turn being generated (starling_demo/ui/live.py). The component's value is a `.live-cards` box with
// the number of cards and, once the turn runs, the key to pull it by: the page asks the server for the replies that
// changed since it last drew, draws them, and asks again when the browser is ready to paint, at most every 0.1 s.
// A new value (another turn, or "" when the turn is scored) ends the pulling; the cards expanded here stay expanded
// as the turn's own.
let pulling = null;
let expanded = [];

function cards(box) {
  const n = Number(box.dataset.n) || 0;
  for (let k = box.children.length + 1; k <= n; k++) {
    box.insertAdjacentHTML("beforeend", `<div class="card live-card" data-k="${k}"><div class="prose badge">`
      + `<div class="badge-line"><b>#${k}</b> · waiting…</div></div><div class="card-view"><div class="prose">`
      + `</div></div></div>`);
  }
}

// A collapsed card shows the first lines of its reply, which stop changing once they are filled: such a card is
// sent its badge alone (the token count), and its reply again when it is expanded.
function wanted(box, drawn) {
  const want = [];
  expanded = [];
  for (const card of box.querySelectorAll(".live-card")) {
    const k = Number(card.dataset.k);
    if (card.classList.contains("expanded")) expanded.push(k);
    const view = card.querySelector(".card-view");
    if (card.classList.contains("expanded") || view.scrollHeight <= view.clientHeight + 1) {
      want.push(k);
      if (card.dataset.behind) drawn[k - 1] = null;  // drawn without its reply: send all of it
    }
  }
  return want;
}

async function pull(box, key) {
  pulling = key;
  const drawn = [];
  while (pulling === key) {
    const asked = performance.now();
    let frame;
    try {
      frame = await server.live_cards([key, drawn, wanted(box, drawn)]);
    } catch (error) {
      break;  // the turn's own frames still bring its cards
    }
    if (pulling !== key) break;
    for (const [k, badge, reply, progress] of frame.cards) {
      const card = box.querySelector(`.live-card[data-k="${k}"]`);
      if (!card) continue;
      card.querySelector(".badge").innerHTML = badge;
      if (reply === null) card.dataset.behind = "1";
      else {
        card.querySelector(".card-view .prose").innerHTML = reply;
        delete card.dataset.behind;
      }
      drawn[k - 1] = progress;
    }
    if (frame.done) break;
    await new Promise((resolve) => requestAnimationFrame(
      () => setTimeout(resolve, Math.max(0, 100 - (performance.now() - asked)))));
  }
  if (pulling === key) pulling = null;
}

watch("value", () => {
  const box = element.querySelector(".live-cards");
  if (!box) {
    pulling = null;
    expanded.forEach((k) => document.getElementById(`candidate-${k}`)?.classList.add("expanded"));
    expanded = [];
    return;
  }
  cards(box);
  if (box.dataset.live && box.dataset.live !== pulling) pull(box, box.dataset.live);
});
