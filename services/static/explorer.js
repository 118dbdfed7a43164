// The explorer: pick a user of the published run, see history, rationale and ranked items.
// Data only ever enters the page as textContent of created elements, never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("r2ec-token") || "";

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function say(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

async function api(path) {
  const response = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  if (response.status === 401) {
    $("login").hidden = false;
    throw new Error("This service wants an API token.");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function showRun() {
  try {
    const run = await api("/v1/runs/current");
    $("run").textContent =
      `Published run ${run.run_id} · model ${run.model_name} v${run.model_version} · ` +
      `${run.users_scored} users scored · published ${new Date(run.published_at).toLocaleString()}`;
  } catch (error) {
    $("run").textContent = error.message;
  }
}

async function showUsers() {
  try {
    const query = new URLSearchParams({ q: $("search").value, limit: "200" });
    const { users } = await api(`/v1/users?${query}`);
    const buttons = users.map((id) => {
      const button = element("button", id);
      button.type = "button";
      button.dataset.user = id;
      button.addEventListener("click", () => showUser(id));
      const item = element("li");
      item.append(button);
      return item;
    });
    $("users").replaceChildren(...buttons);
    if (!users.length) $("users").append(element("li", "no user matches", "muted"));
  } catch (error) {
    say(error.message);
  }
}

function itemRow(item) {
  const row = element("tr");
  const score = item.score === null ? "–" : item.score.toFixed(3);
  row.append(element("td", String(item.rank)), element("td", item.title), element("td", item.item_id, "id"));
  row.append(element("td", score, "number"));
  return row;
}

async function showUser(userId) {
  try {
    const found = await api(`/v1/users/${encodeURIComponent(userId)}/recommendations`);
    say("");
    $("user-id").textContent = found.user_id;
    $("status").textContent = found.status;
    $("status").dataset.status = found.status;
    $("detail").textContent = found.detail;
    $("rationale").textContent = found.rationale || "(no rationale: this user was not scored)";
    $("history").replaceChildren(...found.history.map((item) => element("li", item.title)));
    $("items").replaceChildren(...found.items.map(itemRow));
    $("made-by").textContent =
      `Made by run ${found.run_id}, model ${found.model_name} v${found.model_version}, ` +
      `generated ${new Date(found.generated_at).toLocaleString()}.`;
    $("user").hidden = false;
    for (const button of $("users").querySelectorAll("button")) {
      button.setAttribute("aria-current", String(button.dataset.user === userId));
    }
    history.replaceState(null, "", `?${new URLSearchParams({ user: userId })}`);
  } catch (error) {
    say(error.message);
  }
}

function start() {
  const wanted = new URLSearchParams(location.search).get("user");
  say("");
  showRun();
  showUsers();
  if (wanted) showUser(wanted);
}

let typing;
$("search").addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(showUsers, 200);
});
$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value;
  sessionStorage.setItem("r2ec-token", token);
  $("login").hidden = true;
  start();
});
start();
