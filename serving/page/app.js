// The chat page: one question at a time over the gateway's own SSE chat stream (no second API).
// Everything the gateway sends is text put in with textContent; nothing is parsed as HTML.
"use strict";

const STOP = new Set("the a an and or of to in on for is are was be how what why when who which do does can with from by at it this that as not".split(" "));
const $ = (id) => document.getElementById(id);
const state = { session: newSession(), busy: false };

function newSession() {
  return "page-" + (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random().toString(16).slice(2));
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") node.textContent = v;
    else if (k.startsWith("aria-") || k.startsWith("data-") || k === "role") node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function headers(json = true) {
  const h = json ? { "content-type": "application/json" } : {};
  const key = sessionStorage.getItem("rayrag-key");
  if (key) h.authorization = "Bearer " + key;
  return h;
}

function say(text) { $("status").textContent = text; }

// -- errors, as a person reads them --------------------------------------------------------------

async function errorOf(response) {
  let error = {};
  try { error = (await response.json()).error || {}; } catch (_) { /* not JSON: the status says it */ }
  return { status: response.status, retry: response.headers.get("retry-after"), ...error };
}

function explain(error) {
  const code = error.code || "";
  if (error.status === 401) return "This gateway needs an API key, and the one given is missing or not valid. Enter yours above.";
  if (error.status === 403) return "Your key may not use this index or model: " + (error.message || "");
  if (error.status === 429) return "Over quota: " + (error.message || "too many requests") + (error.retry ? ` Try again in ${error.retry} s.` : "");
  if (code === "content_policy_violation") return `Blocked by a guardrail (${error.param || "policy"}): rephrase the question.`;
  if (code === "index_not_found" || (code === "model_not_found" && /\bindex\b/.test(error.message || ""))) return "That index is not loaded on this gateway: " + (error.message || "");
  if (error.status === 503) return "The service is not ready: " + (error.message || "") + (error.retry ? ` Try again in ${error.retry} s.` : "");
  return (error.message || "The request failed") + (error.status ? ` (HTTP ${error.status})` : "");
}

// -- indexes ----------------------------------------------------------------------------------------

async function loadIndexes() {
  const picker = $("index");
  const response = await fetch("v1/models", { headers: headers(false) });
  if (!response.ok) { say(explain(await errorOf(response))); return; }
  const models = (await response.json()).data.filter((m) => m.id.startsWith("rag:"));
  picker.replaceChildren(...models.map((m) => el("option", { value: m.id, text: m.id.slice(4) + (m.index_version ? ` (${m.index_version})` : "") })));
  say(models.length ? "" : "No index is served to this key.");
}

// -- answers ----------------------------------------------------------------------------------------

function renderAnswer(node, text, citations) {
  // [n] markers become links to their passage in the sources list (when that passage is known)
  const known = new Set(citations.map((c) => String(c.n)));
  const parts = text.split(/(\[\d+\])/);
  node.replaceChildren(...parts.map((part) => {
    const n = /^\[(\d+)\]$/.exec(part);
    if (!n || !known.has(n[1])) return document.createTextNode(part);
    const link = el("a", { href: "#cite-" + n[1], className: "cite", text: part, "aria-label": "source " + n[1] });
    link.addEventListener("click", (event) => { event.preventDefault(); focusCitation(n[1]); });
    return link;
  }));
}

function focusCitation(n) {
  const item = $("cite-" + n);
  if (!item) return;
  item.classList.add("flash");
  item.scrollIntoView({ block: "nearest" });
  item.querySelector("button").focus();
  setTimeout(() => item.classList.remove("flash"), 1500);
}

function highlighted(text, words) {
  if (!words.length) return [document.createTextNode(text)];
  const pattern = new RegExp("(" + words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|") + ")", "gi");
  return text.split(pattern).map((part, i) => (i % 2 ? el("mark", { text: part }) : document.createTextNode(part)));
}

function wordsOf(question) {
  return [...new Set(question.toLowerCase().match(/[\p{L}\p{N}_]{3,}/gu) || [])].filter((w) => !STOP.has(w));
}

function renderCitations(index, citations, words) {
  $("citations").replaceChildren(...citations.map((c) => {
    const where = [...new Set([c.title, c.section].filter(Boolean)), c.page != null ? "page " + c.page : null].filter(Boolean).join(" · ");
    const passage = el("button", { type: "button", text: "Open passage" });
    passage.addEventListener("click", () => openPassage(index, c, words));
    const documentButton = el("button", { type: "button", text: "Open document" });
    documentButton.addEventListener("click", () => openDocument(index, c, words));
    return el("li", { id: "cite-" + c.n, className: "citation", "data-source": c.source },
      el("strong", { text: `[${c.n}] ${where || c.source}` }),
      el("p", { className: "where", text: `${c.source} · score ${Number(c.score).toFixed(3)}` }),
      el("p", { className: "snippet" }, ...highlighted(c.snippet, words)),
      passage, " ", documentButton);
  }));
}

async function openPassage(index, citation, words) {
  const response = await fetch(`v1/indexes/${encodeURIComponent(index)}/chunks/${encodeURIComponent(citation.chunk_id)}`, { headers: headers(false) });
  if (!response.ok) { say(explain(await errorOf(response))); return; }
  const { passage, version } = await response.json();
  showViewer(`[${citation.n}] ${passage.title || passage.source}`, `${passage.source} · ${passage.section || ""} · ${index} ${version}`,
    [el("div", { "data-chunk": passage.chunk_id }, ...highlighted(passage.text, words))]);
}

async function openDocument(index, citation, words) {
  const url = `v1/indexes/${encodeURIComponent(index)}/document?source=${encodeURIComponent(citation.source)}`;
  const response = await fetch(url, { headers: headers(false) });
  if (!response.ok) { say(explain(await errorOf(response))); return; }
  const doc = await response.json();
  const blocks = doc.sections.map((s) => el("section", { className: s.section === citation.section ? "here" : "", "data-section": s.section || "" },
    s.section ? el("h4", { text: s.section }) : null, ...highlighted(s.text, words)));
  if (doc.truncated) blocks.push(el("p", { className: "notice", text: "The document goes on; only its first part is shown." }));
  showViewer(doc.title || doc.source, `${doc.source} · ${index} ${doc.version}`, blocks);
  const here = $("viewer-body").querySelector(".here");
  if (here) here.scrollIntoView({ block: "start" });
}

function showViewer(title, where, blocks) {
  $("viewer-title").textContent = title;
  $("viewer-where").textContent = where;
  $("viewer-body").replaceChildren(...blocks);
  $("viewer").hidden = false;
  $("viewer").focus();
}

function describe(meta, rayrag, backend, rid) {
  const steps = (rayrag.steps || []).join(" → ");
  const grades = rayrag.grades ? ` · grounded: ${rayrag.grades.grounded ? "yes" : "no"}${rayrag.grades.regenerated ? " (regenerated)" : ""}` : "";
  const cache = rayrag.cache && rayrag.cache.hit ? " · from the semantic cache" : "";
  meta.textContent = `answered by ${backend || "?"}${steps ? " (" + steps + ")" : ""} · index ${rayrag.index || "?"} ${rayrag.index_version || ""}`
    + ` · prompt ${rayrag.prompt || "?"}${grades}${cache} · request ${rid}`;
}

function feedbackFor(rid) {
  const comment = el("input", { type: "text", placeholder: "comment (optional)", "aria-label": "Comment on this answer" });
  const done = el("span", { role: "status" });
  const button = (rating, label) => {
    const b = el("button", { type: "button", text: label, "aria-pressed": "false", "data-rating": rating });
    b.addEventListener("click", async () => {
      const body = { request_id: rid, rating, comment: comment.value || null };
      const response = await fetch("v1/feedback", { method: "POST", headers: headers(), body: JSON.stringify(body) });
      if (!response.ok) { done.textContent = explain(await errorOf(response)); return; }
      b.setAttribute("aria-pressed", "true");
      done.textContent = "Thanks: feedback stored.";
    });
    return b;
  };
  return el("div", { className: "feedback" }, button("up", "Helpful"), button("down", "Not helpful"), comment, done);
}

async function ask(question) {
  const model = $("index").value;
  const answer = el("div", { className: "answer", "aria-live": "polite" });
  const meta = el("p", { className: "meta" });
  const turn = el("li", { className: "turn" }, el("p", { className: "question", text: question }), answer, meta);
  $("turns").append(turn);
  const words = wordsOf(question);
  let text = "", citations = [], rid = "";
  say("Asking…");
  const body = { model, stream: true, session_id: state.session, messages: [{ role: "user", content: question }] };
  const response = await fetch("v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) {
    turn.append(el("p", { className: "error", role: "alert", text: explain(await errorOf(response)) }));
    say("");
    return;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const events = buffer.split(/\r?\n\r?\n/);
    buffer = events.pop();
    for (const event of events) {
      const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) { turn.append(el("p", { className: "error", role: "alert", text: explain(chunk.error) })); continue; }
      rid = chunk.id || rid;
      if (chunk.rayrag) {
        if (chunk.rayrag.citations) { citations = chunk.rayrag.citations; renderCitations(chunk.rayrag.index, citations, words); }
        if (chunk.usage) describe(meta, chunk.rayrag, chunk.rayrag.backend, rid);
        if (chunk.rayrag.backend === "extractive") {
          turn.append(el("p", { className: "notice", text: "No model generator was ready: this answer quotes the passages (extractive)." }));
        }
      }
      for (const choice of chunk.choices || []) {
        text += (choice.delta && choice.delta.content) || "";
        if (choice.finish_reason === "content_filter") {
          turn.append(el("p", { className: "error", role: "alert", text: "The answer was stopped by the content filter." }));
        }
      }
      renderAnswer(answer, text, citations);
    }
  }
  answer.removeAttribute("aria-live");  // only the answer being written is announced
  if (rid) turn.append(feedbackFor(rid));
  say("");
}

// -- wiring -----------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = sessionStorage.getItem("rayrag-key") || "";
  $("api-key").addEventListener("change", () => {
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem("rayrag-key", key); else sessionStorage.removeItem("rayrag-key");
    loadIndexes();
  });
  $("new-chat").addEventListener("click", () => {
    state.session = newSession();
    $("turns").replaceChildren();
    $("citations").replaceChildren();
    $("viewer").hidden = true;
    say("New chat: earlier turns are forgotten.");
    $("question").focus();
  });
  $("viewer-close").addEventListener("click", () => { $("viewer").hidden = true; });
  $("ask").addEventListener("submit", async (event) => {
    event.preventDefault();
    const question = $("question").value.trim();
    if (!question || state.busy) return;
    state.busy = true;
    $("send").disabled = true;
    try {
      await ask(question);
      $("question").value = "";
    } catch (error) {
      say("The request failed: " + error.message);
    } finally {
      state.busy = false;
      $("send").disabled = false;
      $("question").focus();
    }
  });
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("ask").requestSubmit(); }
  });
  loadIndexes();
});
