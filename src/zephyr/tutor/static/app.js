// Zephyr tutor page: streams /v1/chat/completions (server-sent events) and calls /v1/mcqa.
// Served by the app itself: no CDN, no framework, no inline script (the CSP forbids it).
"use strict";

const $ = (id) => document.getElementById(id);
const history = [];
let modelId = null;
let controller = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  const token = $("token").value.trim();
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

function showError(text) {
  $("error").textContent = text || "";
  $("error").hidden = !text;
}

async function errorText(res) {
  try {
    const body = await res.json();
    return `${res.status}: ${(body.error && body.error.message) || JSON.stringify(body)}`;
  } catch (e) {
    return `${res.status} ${res.statusText}`;
  }
}

async function loadModel() {
  try {
    const res = await fetch("/v1/models", { headers: headers() });
    if (!res.ok) throw new Error(await errorText(res));
    modelId = (await res.json()).data[0].id;
    $("model").textContent = modelId;
  } catch (e) {
    $("model").textContent = "model: set the access token in Settings";
  }
}

function bubble(role, text) {
  const hint = document.querySelector("#log .hint");
  if (hint) hint.remove();
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

function busy(on) {
  $("send").disabled = on;
  $("stop").disabled = !on;
}

async function send(ev) {
  ev.preventDefault();
  const text = $("question").value.trim();
  if (!text) return;
  showError("");
  $("question").value = "";
  history.push({ role: "user", content: text });
  bubble("user", text);
  const out = bubble("assistant streaming", "");
  out.id = "answer-" + history.length;
  controller = new AbortController();
  busy(true);
  let answer = "";
  let finish = null;
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      signal: controller.signal,
      body: JSON.stringify({
        model: modelId || undefined,
        messages: history,
        stream: true,
        max_tokens: Number($("max-tokens").value) || 256,
        temperature: Number($("temperature").value),
      }),
    });
    if (!res.ok) throw new Error(await errorText(res));
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data:")) continue;
        const data = event.slice(5).trim();
        if (data === "[DONE]") continue;
        const msg = JSON.parse(data);
        if (msg.error) throw new Error(msg.error.message);
        const choice = msg.choices && msg.choices[0];
        if (!choice) continue;
        if (choice.delta && choice.delta.content) {
          answer += choice.delta.content;
          out.textContent = answer;
          $("log").scrollTop = $("log").scrollHeight;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") showError(e.message);
  } finally {
    out.classList.remove("streaming");
    out.dataset.finish = finish || "stopped";
    if (finish === "content_filter") out.classList.add("refused");
    if (answer) history.push({ role: "assistant", content: answer });
    controller = null;
    busy(false);
  }
}

async function askMcq(ev) {
  ev.preventDefault();
  showError("");
  const question = $("mcq-question").value.trim();
  const choices = $("mcq-choices").value.split("\n").map((c) => c.trim()).filter(Boolean);
  const result = $("mcq-result");
  result.textContent = "";
  $("mcq-submit").disabled = true;
  try {
    const res = await fetch("/v1/mcqa", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({ model: modelId || undefined, question, choices }),
    });
    if (!res.ok) throw new Error(await errorText(res));
    const body = await res.json();
    const head = document.createElement("p");
    head.className = "answer";
    head.id = "mcq-answer";
    head.textContent = body.unsure ? body.message : `${body.letter}. ${choices[body.index]}`;
    result.appendChild(head);
    for (const [letter, p] of Object.entries(body.probs)) {
      const row = document.createElement("div");
      row.className = "bar" + (letter === body.letter ? " best" : "");
      const track = document.createElement("div");
      track.className = "track";
      const fill = document.createElement("div");
      fill.className = "fill";
      fill.style.width = (100 * p).toFixed(1) + "%";
      track.appendChild(fill);
      const l = document.createElement("span");
      l.textContent = letter;
      const v = document.createElement("span");
      v.textContent = (100 * p).toFixed(1) + "%";
      row.append(l, track, v);
      result.appendChild(row);
    }
  } catch (e) {
    showError(e.message);
  } finally {
    $("mcq-submit").disabled = false;
  }
}

function tab(name) {
  for (const t of ["chat", "mcq", "practice"]) {
    $(t + "-panel").hidden = t !== name;
    $("tab-" + t).classList.toggle("active", t === name);
    $("tab-" + t).setAttribute("aria-selected", String(t === name));
  }
}

// Practice mode: nudge -> hint -> worked example -> answer (as the operator's policy allows).
let practiceId = null;

function practiceStep(kind, text) {
  const p = document.createElement("p");
  p.className = "msg assistant step " + kind.replace(/[^a-z ]/g, "-");
  p.textContent = text;
  $("practice-steps").appendChild(p);
  return p;
}

async function practiceCall(path, payload) {
  const res = await fetch("/v1/practice/" + path, {
    method: "POST",
    headers: headers(),
    body: JSON.stringify(payload),
  });
  if (!res.ok) throw new Error(await errorText(res));
  return res.json();
}

async function practiceStart(ev) {
  ev.preventDefault();
  showError("");
  const question = $("practice-question").value.trim();
  const choices = $("practice-choices").value.split("\n").map((c) => c.trim()).filter(Boolean);
  try {
    const body = await practiceCall("start", question ? { question, choices: choices.length ? choices : null } : {});
    practiceId = body.id;
    $("practice-steps").textContent = "";
    practiceStep("problem", body.question);
    practiceStep("source", body.verifiable ? "I can check your answer exactly." : "I can't check answers to this one exactly.");
    $("practice-check-form").hidden = false;
  } catch (e) {
    showError(e.message);
  }
}

async function practiceNext(path, extra) {
  showError("");
  try {
    const body = await practiceCall(path, { id: practiceId, ...(extra || {}) });
    if (body.verdict) practiceStep("verdict " + body.verdict.replace(/ /g, "-"), body.message);
    else practiceStep(body.kind, body.text);
  } catch (e) {
    showError(e.message);
  }
}

async function practicePolicy() {
  try {
    const res = await fetch("/v1/practice/policy", { headers: headers() });
    if (res.ok && (await res.json()).default_mode === "practice") tab("practice");
  } catch (e) {
    // the chat tab stays
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = localStorage.getItem("zephyr-token") || "";
  $("token").addEventListener("change", () => {
    localStorage.setItem("zephyr-token", $("token").value.trim());
    loadModel();
  });
  $("chat-form").addEventListener("submit", send);
  $("question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => controller && controller.abort());
  $("clear").addEventListener("click", () => {
    history.length = 0;
    $("log").textContent = "";
  });
  $("mcq-form").addEventListener("submit", askMcq);
  $("tab-chat").addEventListener("click", () => tab("chat"));
  $("tab-mcq").addEventListener("click", () => tab("mcq"));
  $("tab-practice").addEventListener("click", () => tab("practice"));
  $("practice-form").addEventListener("submit", practiceStart);
  $("practice-check-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    practiceNext("check", { answer: $("practice-answer").value.trim() });
  });
  $("practice-hint").addEventListener("click", () => practiceNext("hint"));
  $("practice-reveal").addEventListener("click", () => practiceNext("reveal"));
  loadModel();
  practicePolicy();
});
