// bootbox console: progressive enhancement only. Every page works without this script; with it,
// the host list and a host's boot timeline follow /api/v1/events/stream (Server-Sent Events),
// and dangerous forms ask for confirmation.
(function () {
  "use strict";

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) { e.preventDefault(); }
  });

  // Where a boot begins on a host's timeline: the same rule as bootbox/web/console/timeline.py
  // (read its docstring; a browser test runs both on the same steps). `boot` holds the steps of
  // the current boot so far, each {kind, ipxe}; a step begins a boot when this says so.
  var DHCP_STEPS = ["dhcp.offer", "dhcp.ack"];
  var PAST_LOADER = ["http.script", "booted"];
  function isDhcp(step) { return DHCP_STEPS.indexOf(step.kind) >= 0; }
  function beginsBoot(boot, step) {
    if (!boot.length) { return true; }
    if (!isDhcp(step)) { return false; }
    if (!step.ipxe) {
      var before = boot[boot.length - 1];
      return !(isDhcp(before) && !before.ipxe);
    }
    var hadDhcp = boot.some(isDhcp);
    var pastLoader = boot.some(function (s) { return PAST_LOADER.indexOf(s.kind) >= 0; });
    return pastLoader || !hadDhcp;
  }
  // A list of events ({kind, time, data}) as timeline() gives them: {elapsed, delta, begins} each.
  function Tracker() { this.boot = []; this.previous = null; }
  Tracker.prototype.add = function (ev) {
    var step = { kind: ev.kind, time: ev.time, ipxe: !!(ev.data && ev.data.ipxe) };
    var begins = beginsBoot(this.boot, step);
    if (begins) { this.boot = []; }
    this.boot.push(step);
    var out = { elapsed: step.time - this.boot[0].time, delta: this.previous ? step.time - this.previous.time : null,
                begins: begins };
    this.previous = step;
    return out;
  };
  function timelineOf(events) {
    var tracker = new Tracker();
    return events.map(function (ev) { return tracker.add(ev); });
  }
  window.bootboxConsole = { beginsBoot: beginsBoot, timeline: timelineOf };

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function clock(t) {
    var d = new Date(t * 1000);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function cell(row, text, tag) {
    var td = document.createElement("td");
    if (tag) { var inner = document.createElement(tag); inner.textContent = text; td.appendChild(inner); }
    else { td.textContent = text; }
    row.appendChild(td);
  }

  // Open the stream for the given kinds (each SSE event is named by its kind) from the page's
  // feed position, so nothing that happened between rendering and connecting is lost.
  function follow(params, kinds, onEvent) {
    if (!window.EventSource) { return null; }
    var source = new EventSource("/api/v1/events/stream?" + params);
    var live = document.getElementById("live");
    source.onopen = function () { if (live) { live.hidden = false; } };
    source.onerror = function () { if (live) { live.hidden = true; } };
    kinds.forEach(function (kind) {
      source.addEventListener(kind, function (msg) { onEvent(JSON.parse(msg.data)); });
    });
    source.onmessage = function (msg) { onEvent(JSON.parse(msg.data)); };
    return source;
  }

  // Run `work` (which returns a promise) at most once per `wait` ms however many events ask for
  // it, and once more after a run that was under way when another event came in.
  function throttled(work, wait) {
    var timer = null, busy = false, again = false;
    function fire() {
      timer = null; busy = true;
      work().catch(function () {}).then(function () {
        busy = false;
        if (again) { again = false; kick(); }
      });
    }
    function kick() {
      if (busy) { again = true; return; }
      if (!timer) { timer = setTimeout(fire, wait); }
    }
    return kick;
  }

  // A console fragment (GET .../live): the server renders the page's changing parts with the
  // same templates as the page; each is an element with an id and data-live.
  function fragment(url) {
    return fetch(url, { credentials: "same-origin", redirect: "error", headers: { Accept: "text/html" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (text) { var t = document.createElement("template"); t.innerHTML = text; return t.content; });
  }
  function swapParts(parts, skip) {
    Array.prototype.forEach.call(parts.querySelectorAll("[data-live][id]"), function (part) {
      var old = document.getElementById(part.id);
      if (old && (!skip || skip.indexOf(part.id) < 0)) { old.replaceWith(part); }
    });
  }

  function refreshState(mac, target) {
    fetch("/api/v1/hosts/" + encodeURIComponent(mac), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (host) {
        if (!host || !target) { return; }
        target.textContent = host.state;
        target.className = "state state-" + host.state;
      })
      .catch(function () {});
  }
  function flash(row) { row.classList.remove("fresh"); void row.offsetWidth; row.classList.add("fresh"); }

  var body = document.body;
  var kinds = (body.dataset.kinds || "").split(" ").filter(Boolean);
  var since = body.dataset.since || "";

  // A host's page: append each step to the timeline with its elapsed and step times, and
  // refresh the page's other parts (header, attributes, associations...) from its fragment.
  var timeline = document.getElementById("timeline");
  if (timeline) {
    var mac = timeline.dataset.mac;
    var tracker = new Tracker();
    Array.prototype.forEach.call(timeline.tBodies[0].rows, function (row) {  // the rendered steps
      tracker.add({ kind: row.dataset.kind, time: parseFloat(row.dataset.time), data: { ipxe: !!row.dataset.ipxe } });
    });
    var refreshHost = throttled(function () { return fragment(timeline.dataset.liveUrl).then(swapParts); }, 400);
    follow("host=" + encodeURIComponent(mac) + (since ? "&since=" + since : ""), kinds, function (ev) {
      var step = tracker.add(ev);
      var row = document.createElement("tr");
      row.className = "fresh kind-" + ev.kind.replace(/\./g, "-") + (step.begins ? " boot-start" : "");
      cell(row, clock(ev.time));
      cell(row, "+" + step.elapsed.toFixed(2) + " s");
      cell(row, step.delta === null ? "-" : step.delta.toFixed(2) + " s");
      cell(row, ev.kind, "code");
      cell(row, ev.message);
      row.dataset.eventId = ev.id;
      row.dataset.kind = ev.kind;
      row.dataset.time = ev.time;
      if (ev.data && ev.data.ipxe) { row.dataset.ipxe = "1"; }
      timeline.tBodies[0].appendChild(row);
      var none = document.getElementById("no-steps");
      if (none) { none.remove(); }
      refreshHost();
    });
  }

  // A plugin's own view of a profile or a diff (e.g. esxi: VIBs by name and version): fetched
  // from its API and shown as key: value lists; without the script the page links to the JSON.
  function show(value, into) {
    if (Array.isArray(value)) {
      var list = document.createElement("ul"); list.className = "list";
      value.forEach(function (v) { var li = document.createElement("li"); show(v, li); list.appendChild(li); });
      into.appendChild(list);
    } else if (value && typeof value === "object") {
      var table = document.createElement("table"); table.className = "spec";
      Object.keys(value).forEach(function (k) {
        var row = table.insertRow(); var th = document.createElement("th"); th.textContent = k; row.appendChild(th);
        show(value[k], row.insertCell());
      });
      into.appendChild(table);
    } else {
      var code = document.createElement("code"); code.textContent = String(value); into.appendChild(code);
    }
  }
  Array.prototype.forEach.call(document.querySelectorAll(".plugin-view[data-url]"), function (section) {
    fetch(section.dataset.url, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (doc) { if (doc !== null) { show(doc, section); section.classList.add("loaded"); } })
      .catch(function () {});
  });

  // The host list: a row flashes when its host does something. On page 1 (newest activity
  // first) the list is re-read from its fragment for the same query, so hosts never seen before
  // appear, rows follow the order a reload would give and their cells refresh; a later page
  // keeps its rows (a reload of it would shift) and only refreshes their state.
  var list = document.getElementById("host-list");
  if (list) {
    var touched = {};
    var rowsByMac = function () {
      var found = {};
      Array.prototype.forEach.call(document.querySelectorAll("#hosts tbody tr[data-mac]"), function (row) {
        found[row.dataset.mac] = row;
      });
      return found;
    };
    var merge = function (parts) {
      var current = document.getElementById("host-list");
      var next = parts.querySelector("#host-list");
      var oldBody = current.querySelector("#hosts tbody"), newBody = next && next.querySelector("#hosts tbody");
      swapParts(parts, ["host-list"]);  // the count
      if (!next) { return; }
      if (!oldBody || !newBody) { current.replaceWith(next); touched = {}; return; }
      var existing = rowsByMac();
      Array.prototype.slice.call(newBody.rows).forEach(function (fresh) {
        var row = existing[fresh.dataset.mac];
        if (row) { row.innerHTML = fresh.innerHTML; delete existing[fresh.dataset.mac]; }
        else { row = fresh; if (touched[row.dataset.mac]) { row.classList.add("fresh"); } }
        oldBody.appendChild(row);  // moves a kept row into the new order
      });
      Object.keys(existing).forEach(function (gone) { existing[gone].remove(); });
      var oldPager = current.querySelector("#pager"), newPager = next.querySelector("#pager");
      if (oldPager && newPager) { oldPager.replaceWith(newPager); }
      else if (oldPager) { oldPager.remove(); }
      else if (newPager) { current.appendChild(newPager); }
      touched = {};
    };
    var refreshList = throttled(function () {
      return fragment(document.getElementById("host-list").dataset.liveUrl).then(merge);
    }, 500);
    var firstPage = (parseInt(list.dataset.page, 10) || 1) === 1;
    follow(since ? "since=" + since : "", kinds, function (ev) {
      var row = rowsByMac()[ev.mac];
      if (row) { flash(row); }
      if (firstPage) { touched[ev.mac] = true; refreshList(); }
      else if (row) { refreshState(ev.mac, row.querySelector(".state")); }
    });
  }
})();
