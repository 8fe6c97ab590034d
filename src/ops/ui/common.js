"use strict";
// Shared by the status page and the API page: the token kept for this browser session, the
// prompt for it, and a DOM helper.

const KEY = "vane-token";
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : String(k));
  return e;
}

function showLogin(message) {
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

// Runs `start` once a token is at hand: now, or when the prompt is submitted.
function withToken(start) {
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("token").value);
    $("token").value = "";
    start();
  });
  if (sessionStorage.getItem(KEY)) start();
  else showLogin();
}
