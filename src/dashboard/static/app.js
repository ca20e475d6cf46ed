// reposafe dashboard: confirmations and live job progress. Plain JavaScript, no
// framework, nothing loaded from elsewhere.
"use strict";

// A form with data-confirm asks before it is sent.
document.addEventListener("submit", function (ev) {
  var msg = ev.target.getAttribute("data-confirm");
  if (msg && !window.confirm(msg)) ev.preventDefault();
});

function fmtBytes(n) {
  var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

// Shows a job's latest state in `el`: its <progress>, and the descendants marked
// data-field=state|counts|notice|fetched|stored|current.
function showJob(el, job) {
  var p = job.progress || {};
  el.querySelectorAll("progress").forEach(function (bar) {
    bar.max = Math.max(p.repos_total || 0, 1);
    bar.value = job.state === "queued" ? 0 : (p.repos_done || 0);
    if (job.state !== "queued" && job.state !== "running" && !p.repos_total) bar.value = bar.max;
  });
  var set = function (field, text) {
    el.querySelectorAll('[data-field="' + field + '"]').forEach(function (f) {
      f.textContent = text;
      if (field === "state") f.className = text;
    });
  };
  set("state", job.state);
  set("counts", (p.repos_done || 0) + "/" + (p.repos_total || 0) + " (" + (p.failed || 0) + " failed)");
  set("notice", job.state === "queued" || job.state === "running" ? (p.notice || "") : "");
  set("fetched", fmtBytes(p.bytes_fetched || 0));
  set("stored", fmtBytes(p.bytes_stored || 0));
  set("current", (p.current || []).join(", "));
  el.setAttribute("data-state", job.state);
}

// Every element with data-live-job="ID" follows that job over Server-Sent Events
// until it ends; with data-refresh-on-end the page's live parts are re-read while
// repositories finish (at most every 3 s) and once more at the end, to show the
// per-repository results.
function follow(el) {
  var id = el.getAttribute("data-live-job");
  if (!id || !window.EventSource) return;
  var es = new EventSource("/api/v1/jobs/" + encodeURIComponent(id) + "/events");
  var done = null, refreshedAt = Date.now();
  var onEvent = function (ev) {
    var job;
    try { job = JSON.parse(ev.data); showJob(el, job); } catch (e) { return; }
    var refresh = el.hasAttribute("data-refresh-on-end");
    if (ev.type === "end") {
      es.close();
      el.setAttribute("data-ended", "1");
      var target = el.getAttribute("data-results");
      if (target) loadResults(id, document.getElementById(target));
      if (refresh) refreshLive(id);
    } else if (refresh && (job.progress || {}).repos_done !== done && Date.now() - refreshedAt > 3000) {
      done = (job.progress || {}).repos_done;
      refreshedAt = Date.now();
      refreshLive(null);
    }
  };
  es.addEventListener("progress", onEvent);
  es.addEventListener("end", onEvent);
  es.onerror = function () { if (el.getAttribute("data-ended")) es.close(); };
}

// The page's [data-live] parts (a job's results, times, actions) read again from the
// server and swapped in place, without a reload; parts still following a running job
// are left alone, and an answer older than the latest asked for is dropped. After the
// job `ended` ended, <html data-refreshed=ID> says its final parts are shown.
var liveAsked = 0, liveEnded = null;
function refreshLive(ended) {
  var asked = ++liveAsked;
  if (ended) liveEnded = ended;
  fetch(location.href, { credentials: "same-origin", cache: "no-store" })
    .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
    .then(function (text) {
      if (asked !== liveAsked) return;
      var doc = new DOMParser().parseFromString(text, "text/html");
      document.querySelectorAll("[data-live][id]").forEach(function (part) {
        if (part.getAttribute("data-live-job") && !part.getAttribute("data-ended")) return;
        var fresh = doc.getElementById(part.id);
        if (fresh) part.replaceWith(document.importNode(fresh, true));
      });
      if (liveEnded) document.documentElement.setAttribute("data-refreshed", liveEnded);
      liveEnded = null;
    })
    .catch(function () {});
}

// Fills a results table body from /api/v1/jobs/ID/results once the job ended.
function loadResults(id, table) {
  if (!table) return;
  fetch("/api/v1/jobs/" + encodeURIComponent(id) + "/results", { credentials: "same-origin" })
    .then(function (r) { return r.ok ? r.json() : []; })
    .then(function (rows) {
      var body = table.tBodies[0] || table.createTBody();
      body.textContent = "";
      rows.forEach(function (r) {
        var tr = body.insertRow();
        [r.connection, r.repository, r.status, r.snapshot || "", r.reason || ""].forEach(function (v) {
          tr.insertCell().textContent = v == null ? "" : (typeof v === "string" ? v : JSON.stringify(v));
        });
      });
    });
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-live-job]").forEach(function (el) {
    var state = el.getAttribute("data-state");
    if (state === "queued" || state === "running") follow(el);
  });
});

// An RFC 3339 time as the server shows one: "2026-12-02 02:00 +01:00" (or "UTC").
function shownTime(t) {
  var m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d):\d\d(?:\.\d+)?(Z|[+-]\d\d:\d\d)$/.exec(t);
  return m ? m[1] + " " + m[2] + " " + (m[3] === "Z" ? "UTC" : m[3]) : t;
}

// The plan form: the schedule read in words and its next 5 runs, asked of the
// daemon (POST /api/v1/plans/preview, nothing saved) as the fields change.
function previewSchedule() {
  var form = document.getElementById("plan-form");
  if (!form) return;
  var csrf = document.querySelector('meta[name="csrf-token"]');
  var val = function (n) { var v = form.elements[n] && form.elements[n].value.trim(); return v || null; };
  var spec = { name: "preview", connections: [], schedule: val("schedule"), timezone: val("timezone"), window: val("window") };
  fetch("/api/v1/plans/preview", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf ? csrf.content : "" },
    body: JSON.stringify(spec)
  }).then(function (r) { return r.json().then(function (b) { return { ok: r.ok, body: b }; }); })
    .then(function (res) {
      var reading = document.getElementById("schedule-reading");
      var runs = document.getElementById("next-runs");
      if (!reading || !runs) return;
      runs.textContent = "";
      if (!res.ok) { reading.textContent = res.body.error || "invalid"; reading.className = "error"; return; }
      reading.className = "muted";
      reading.textContent = spec.schedule ? (res.body.reading || "") + " (" + res.body.timezone + ")" : "on demand only";
      (res.body.next_runs || []).forEach(function (t) { runs.appendChild(document.createElement("li")).textContent = shownTime(t); });
    });
}

var previewTimer = null;
document.addEventListener("input", function (ev) {
  if (!ev.target.form || ev.target.form.id !== "plan-form") return;
  if (["schedule", "timezone", "window"].indexOf(ev.target.name) < 0) return;
  clearTimeout(previewTimer);
  previewTimer = setTimeout(previewSchedule, 300);
});

// A file input with data-fill="ID" puts the chosen file's text into #ID (a CA bundle).
document.addEventListener("change", function (ev) {
  var target = ev.target.getAttribute && ev.target.getAttribute("data-fill");
  if (!target || !ev.target.files || !ev.target.files[0]) return;
  ev.target.files[0].text().then(function (t) { document.getElementById(target).value = t; });
});

document.addEventListener("DOMContentLoaded", previewSchedule);
