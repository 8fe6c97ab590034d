"use strict";
// The API page: the routes of /.well-known/openapi.json, each with a form that sends the
// request with the session's token and shows the answer.
// (KEY, $, el, showLogin and withToken come from common.js.)

async function call(method, path, body) {
  const headers = { Authorization: "Bearer " + (sessionStorage.getItem(KEY) || "") };
  if (body) headers["Content-Type"] = "application/json";
  return fetch(path, { method, headers, body: body || undefined, cache: "no-store" });
}

function route(path, method, op) {
  const box = el("details", { class: "route", "data-route": method.toUpperCase() + " " + path });
  box.append(el("summary", {}, el("code", {}, method.toUpperCase() + " " + path), " — " + op.summary));
  const url = el("input", { value: path, "aria-label": "path" });
  url.style.width = "100%";
  const body = el("textarea", { rows: "4", placeholder: "JSON body", "aria-label": "body" });
  body.style.width = "100%";
  const out = el("pre", { class: "answer" });
  const send = el("button", { type: "button" }, "Send");
  send.addEventListener("click", async () => {
    const r = await call(method.toUpperCase(), url.value, method === "post" || method === "put" ? body.value : "");
    const text = await r.text();
    out.textContent = r.status + " " + r.statusText + "\n" + text;
  });
  box.append(url);
  if (method === "post" || method === "put") box.append(body);
  box.append(send, out);
  return box;
}

async function start() {
  $("login").hidden = true;
  const r = await call("GET", "/.well-known/openapi.json");
  if (r.status === 401) {
    sessionStorage.removeItem(KEY);
    showLogin("That token was refused.");
    return;
  }
  const doc = await r.json();
  $("meta").textContent = doc.info.title + " v" + doc.info.version;
  const list = [];
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) list.push(route(path, method, op));
  }
  $("routes").replaceChildren(...list);
  $("main").hidden = false;
  $("state").textContent = "ready";
  $("state").className = "state ok";
}

withToken(start);
