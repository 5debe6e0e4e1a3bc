() => {
  // How the page shows the candidate cards, which needs no server: expand or collapse a card, edit its text in
  // place of the rendered reply, order the cards by rank or by number, jump from a ranking row to its card, and
  // rank a blind turn by clicking its cards. One delegated listener: Gradio re-renders the cards' badges.
  const card = (el) => el.closest(".card");
  const judgeBox = () => document.querySelector("#judge-order input, #judge-order textarea");
  const judged = () => (judgeBox()?.value.match(/\d+/g) || []).map(Number);

  function setJudged(order) {
    // The hidden box is what "Reveal" sends; Gradio reads it from its input event.
    const box = judgeBox();
    if (!box) return;
    box.value = order.join(" ");
    box.dispatchEvent(new Event("input", { bubbles: true }));
    document.querySelectorAll(".judge-chip").forEach((chip) => chip.remove());
    order.forEach((k, rank) => {
      const badge = document.querySelector(`#badge-${k} .badge-line`);
      if (badge) badge.insertAdjacentHTML("beforeend", `<span class="judge-chip">your #${rank + 1}</span>`);
    });
    const shown = document.querySelector("#judge-shown");
    if (shown) shown.textContent = order.length ? order.map((k) => `#${k}`).join(" > ") : "none yet";
  }

  const actions = {
    expand: (el) => card(el).classList.toggle("expanded"),
    edit: (el) => {
      const editing = card(el).classList.toggle("editing");
      if (editing) card(el).querySelector("textarea")?.focus();
    },
    rank: (el) => {
      const k = Number(card(el).id.split("-")[1]);
      const order = judged();
      if (!order.includes(k)) setJudged([...order, k]);
    },
    "unrank-last": () => setJudged(judged().slice(0, -1)),
    "unrank-all": () => setJudged([]),
    "by-rank": () => document.querySelector(".cards")?.classList.remove("by-number"),
    "by-number": () => document.querySelector(".cards")?.classList.add("by-number"),
    "expand-all": () => {
      const cards = [...document.querySelectorAll(".cards > .card, .live-cards > .card")];
      const open = !cards.every((c) => c.classList.contains("expanded"));
      cards.forEach((c) => c.classList.toggle("expanded", open));
    },
  };

  // While a turn runs Send is off; Enter in the message box must not send behind its back (the turn would start
  // from the conversation as it was before the running one).
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && event.target.closest("#msg")
        && document.querySelector("#send")?.disabled) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-action]");
    if (button && actions[button.dataset.action]) {
      actions[button.dataset.action](button);
      return;
    }
    const row = event.target.closest("#ranking tr.rank-row");
    const target = row && document.getElementById(`candidate-${row.dataset.candidate}`);
    if (target) {
      target.scrollIntoView({ behavior: "smooth", block: "nearest" });
      target.classList.remove("flash");
      void target.offsetWidth;  // restart the animation
      target.classList.add("flash");
    }
  });
}
