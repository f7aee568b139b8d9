/* fedhub datagrepper widget: a user's, a package's or a topic's latest activity,
 * on any page, from the data- attributes of its own <script> tag:
 *
 *   <script src="https://hub.example.org/datagrepper/widget.js"
 *           data-user="ralph" data-rows="10"></script>
 *
 * Attributes: data-user, data-package, data-topic, data-category (any of them;
 * repeat a value with commas), data-rows (1-100, default 10), data-target (the id
 * of an element to fill; default: a new element after the script), data-base (the
 * hub's /datagrepper; default: where this script came from). The messages come
 * from /datagrepper/raw by JSON-P, so the widget works from a page of any origin.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script) {
    var all = document.getElementsByTagName("script");
    for (var i = all.length - 1; i >= 0; i--) {
      if (/\/widget\.js(\?|$)/.test(all[i].src) && !all[i].getAttribute("data-fedhub-done")) { script = all[i]; break; }
    }
  }
  if (!script) { return; }
  script.setAttribute("data-fedhub-done", "1");
  var data = function (name) { return script.getAttribute("data-" + name); };
  var base = data("base") || script.src.replace(/\/widget\.js(\?.*)?$/, "");
  var rows = Math.max(1, Math.min(100, parseInt(data("rows") || "10", 10) || 10));
  var query = ["rows_per_page=" + rows, "order=desc", "meta=subtitle", "meta=link"];
  ["user", "package", "topic", "category"].forEach(function (key) {
    (data(key) || "").split(",").forEach(function (value) {
      value = value.trim();
      if (value) { query.push(key + "=" + encodeURIComponent(value)); }
    });
  });
  var target = data("target") && document.getElementById(data("target"));
  if (!target) {
    target = document.createElement("div");
    script.parentNode.insertBefore(target, script.nextSibling);
  }
  target.className = (target.className ? target.className + " " : "") + "fedhub-widget";
  target.textContent = "Loading activity…";

  var ago = function (seconds) {
    var s = Math.max(0, Date.now() / 1000 - seconds);
    var units = [[86400, "day"], [3600, "hour"], [60, "minute"]];
    for (var u = 0; u < units.length; u++) {
      if (s >= units[u][0]) {
        var n = Math.floor(s / units[u][0]);
        return n + " " + units[u][1] + (n > 1 ? "s" : "") + " ago";
      }
    }
    return "just now";
  };

  var render = function (response) {
    target.textContent = "";
    var messages = (response && response.raw_messages) || [];
    if (!messages.length) {
      target.textContent = "No activity yet.";
      return;
    }
    var list = document.createElement("ul");
    list.className = "fedhub-widget-list";
    messages.forEach(function (m) {
      var item = document.createElement("li");
      item.className = "fedhub-widget-item";
      var text = (m.meta && m.meta.subtitle) || m.topic;
      var link = m.meta && m.meta.link;
      var label = document.createElement(link ? "a" : "span");
      if (link) { label.href = link; }
      label.textContent = text;
      var when = document.createElement("small");
      when.textContent = " " + ago(m.timestamp);
      item.appendChild(label);
      item.appendChild(when);
      list.appendChild(item);
    });
    target.appendChild(list);
  };

  var name = "fedhubWidget" + Math.floor(Math.random() * 1e9);
  var tag = document.createElement("script");
  window[name] = function (response) {
    try { render(response); } finally {
      delete window[name];
      if (tag.parentNode) { tag.parentNode.removeChild(tag); }
    }
  };
  tag.onerror = function () { target.textContent = "Activity is unavailable (" + base + ")."; };
  tag.src = base + "/raw?" + query.join("&") + "&callback=" + name;
  document.head.appendChild(tag);
})();
