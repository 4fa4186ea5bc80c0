// The console's own script: nothing a page needs to work, only conveniences.
// Loaded from /admin/static (script-src 'self'); no inline script anywhere.
(function () {
  "use strict";

  // Drag to reorder a series: moving an item rewrites the order field the form posts
  // (the "Save order" button); the Up/Down buttons are the keyboard way and need no
  // script at all.
  function setUpReorder(list) {
    var dragged = null;
    var field = document.getElementById(list.dataset.orderField);
    function sync() {
      var slugs = [];
      list.querySelectorAll("li[data-slug]").forEach(function (li) { slugs.push(li.dataset.slug); });
      if (field) { field.value = slugs.join(","); }
    }
    list.querySelectorAll("li[data-slug]").forEach(function (li) {
      li.setAttribute("draggable", "true");
      li.addEventListener("dragstart", function (event) {
        dragged = li;
        li.classList.add("dragging");
        event.dataTransfer.effectAllowed = "move";
        event.dataTransfer.setData("text/plain", li.dataset.slug);
      });
      li.addEventListener("dragend", function () {
        li.classList.remove("dragging");
        dragged = null;
        sync();
      });
      li.addEventListener("dragover", function (event) {
        if (!dragged || dragged === li) { return; }
        event.preventDefault();
        var box = li.getBoundingClientRect();
        var after = event.clientY > box.top + box.height / 2;
        list.insertBefore(dragged, after ? li.nextSibling : li);
      });
      li.addEventListener("drop", function (event) { event.preventDefault(); sync(); });
    });
  }

  function init(root) {
    root.querySelectorAll("[data-reorder]").forEach(setUpReorder);
  }

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:afterSwap", function (event) { init(event.target); });
})();
