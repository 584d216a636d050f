// The console's only script (no inline script anywhere: the CSP forbids it).
// Row and gear menus, "select all", the bulk bar's count, and filters that apply on change.
"use strict";
(function () {
  function menuOf(button) {
    return document.getElementById(button.getAttribute("aria-controls"));
  }
  function closeAll(except) {
    document.querySelectorAll('[aria-haspopup="menu"][aria-expanded="true"]').forEach(function (b) {
      if (b !== except) {
        b.setAttribute("aria-expanded", "false");
        menuOf(b).hidden = true;
      }
    });
  }
  function items(menu) {
    return Array.prototype.slice.call(menu.querySelectorAll('[role="menuitem"]'));
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest('[aria-haspopup="menu"]');
    if (button) {
      var open = button.getAttribute("aria-expanded") === "true";
      closeAll(button);
      button.setAttribute("aria-expanded", open ? "false" : "true");
      var menu = menuOf(button);
      menu.hidden = open;
      if (!open && items(menu).length) items(menu)[0].focus();
      event.preventDefault();
      return;
    }
    if (!event.target.closest('[role="menu"]')) closeAll(null);
  });
  document.addEventListener("keydown", function (event) {
    var menu = event.target.closest('[role="menu"]');
    if (event.key === "Escape") {
      var open = document.querySelector('[aria-haspopup="menu"][aria-expanded="true"]');
      closeAll(null);
      if (open) open.focus();
      return;
    }
    if (menu && (event.key === "ArrowDown" || event.key === "ArrowUp")) {
      var list = items(menu);
      var i = list.indexOf(document.activeElement);
      var next = event.key === "ArrowDown" ? (i + 1) % list.length : (i - 1 + list.length) % list.length;
      list[next].focus();
      event.preventDefault();
    }
  });
  function updateCount() {
    var label = document.querySelector(".selected-count");
    if (!label) return;
    var n = document.querySelectorAll('#bulk input[name="id"]:checked').length;
    label.textContent = n ? n + " selected" : "Select rows for a bulk action";
    document.querySelectorAll(".bulkbar button").forEach(function (b) { b.disabled = n === 0; });
  }
  document.addEventListener("change", function (event) {
    var t = event.target;
    if (t.matches("[data-select-all]")) {
      document.querySelectorAll('#bulk input[name="id"]').forEach(function (box) { box.checked = t.checked; });
    }
    if (t.matches("[data-autosubmit]")) t.form.requestSubmit();
    updateCount();
  });
  document.addEventListener("DOMContentLoaded", updateCount);
})();

// A confirmation opened over the page (by htmx): Escape or Cancel closes it in place,
// and focus moves into it when it opens.
(function () {
  function opened() {
    var all = document.querySelectorAll("body > .backdrop");
    return all.length ? all[all.length - 1] : null;
  }
  document.addEventListener("htmx:afterSwap", function () {
    document.querySelectorAll('[aria-haspopup="menu"][aria-expanded="true"]').forEach(function (b) {
      b.setAttribute("aria-expanded", "false");
      document.getElementById(b.getAttribute("aria-controls")).hidden = true;
    });
    var d = opened();
    if (d) {
      var confirm = d.querySelector("button[type=submit]");
      if (confirm) confirm.focus();
    }
  });
  document.addEventListener("keydown", function (event) {
    var d = opened();
    if (d && event.key === "Escape") d.remove();
  });
  document.addEventListener("click", function (event) {
    var d = opened();
    if (d && event.target.closest("[data-cancel]") && d.contains(event.target)) {
      d.remove();
      event.preventDefault();
    }
  });
})();
