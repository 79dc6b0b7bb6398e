// refrestore HTML report: before/after sliders and keyboard navigation. No network use.
(function () {
  "use strict";
  function setSplit(box, pct) {
    pct = Math.max(0, Math.min(100, pct));
    box.style.setProperty("--split", pct + "%");
    box.dataset.split = String(Math.round(pct * 10) / 10);
    var range = box.parentNode.querySelector("input.split");
    if (range && Number(range.value) !== Math.round(pct)) range.value = String(Math.round(pct));
  }
  document.querySelectorAll(".compare").forEach(function (box) {
    var dragging = false;
    function at(ev) {
      var r = box.getBoundingClientRect();
      if (r.width > 0) setSplit(box, ((ev.clientX - r.left) / r.width) * 100);
    }
    box.addEventListener("pointerdown", function (ev) {
      dragging = true;
      if (box.setPointerCapture) box.setPointerCapture(ev.pointerId);
      at(ev);
      ev.preventDefault();
    });
    box.addEventListener("pointermove", function (ev) { if (dragging) at(ev); });
    box.addEventListener("pointerup", function () { dragging = false; });
    box.addEventListener("pointercancel", function () { dragging = false; });
    var range = box.parentNode.querySelector("input.split");
    if (range) range.addEventListener("input", function () { setSplit(box, Number(range.value)); });
  });

  var photos = Array.prototype.slice.call(document.querySelectorAll("section.photo"));
  var current = -1;
  function mark(i) {
    if (current >= 0) photos[current].classList.remove("current");
    current = i;
    photos[i].classList.add("current");
  }
  function go(i) {
    if (!photos.length) return;
    i = Math.max(0, Math.min(photos.length - 1, i));
    mark(i);
    var p = photos[i];
    p.focus({ preventScroll: true });
    p.scrollIntoView({ block: "start" });
    if (history.replaceState) history.replaceState(null, "", "#" + p.id);
  }
  document.addEventListener("keydown", function (ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.target && ev.target.tagName === "INPUT") return;  // the slider keeps its arrow keys
    var k = ev.key;
    if (k === "ArrowRight" || k === "j" || k === "n" || k === "PageDown") go(current + 1);
    else if (k === "ArrowLeft" || k === "k" || k === "p" || k === "PageUp") go(current - 1);
    else if (k === "Home") go(0);
    else if (k === "End") go(photos.length - 1);
    else return;
    ev.preventDefault();
  });
  // The photo last clicked is where "next" starts from.
  photos.forEach(function (p, i) { p.addEventListener("pointerdown", function () { mark(i); }); });
  var hash = location.hash.slice(1);
  if (hash) photos.forEach(function (p, i) { if (p.id === hash) mark(i); });
})();
