"""The inline stylesheet and script of the HTML report (``edgejudge.report``); constants only.

The script filters cards by score: the buttons toggle scores in or out of the selection ("All" clears
it), the selection is mirrored in the URL as ``#filter=4,5`` (so a link or a bookmark keeps it, and a page
opened with one applies it on load), and ``body[data-shown]`` / ``#shown-count`` say how many cards show.
Any hash text is accepted: a malformed escape (``#filter=%``) is read as typed, and values that name no
button are ignored (all cards show), never an exception in the page.
"""

from __future__ import annotations

__all__ = ["CSS", "SCRIPT"]

CSS = """
:root{--bg:#f6f7f9;--card:#fff;--ink:#1d2430;--muted:#667085;--line:#e3e6eb;
--s1:#d92d20;--s2:#f79009;--s3:#eaaa08;--s4:#66c61c;--s5:#12a150;--err:#b42318}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:var(--bg);color:var(--ink)}
header.top{padding:20px 28px 8px}
h1{margin:0 0 4px;font-size:24px}
h2{font-size:16px;margin:0 0 8px}
.muted{color:var(--muted)}
.summary{display:flex;flex-wrap:wrap;gap:12px;padding:8px 28px}
.tile{background:var(--card);border:1px solid var(--line);border-radius:10px;
padding:10px 16px;min-width:110px}
.tile b{display:block;font-size:22px}
.tile span{color:var(--muted);font-size:13px}
.dist{padding:8px 28px}
.chart{width:100%;max-width:460px;height:auto;background:var(--card);
border:1px solid var(--line);border-radius:10px}
.chart text{font-size:13px;fill:var(--ink)}
.chart .lab{fill:var(--muted)}
.s1{fill:var(--s1);background:var(--s1)}.s2{fill:var(--s2);background:var(--s2)}
.s3{fill:var(--s3);background:var(--s3)}.s4{fill:var(--s4);background:var(--s4)}
.s5{fill:var(--s5);background:var(--s5)}.serr{fill:var(--err)}
.filters{position:sticky;top:0;z-index:2;display:flex;flex-wrap:wrap;gap:6px;align-items:center;
padding:10px 28px;background:rgba(246,247,249,.95);border-bottom:1px solid var(--line)}
.filters button{font:inherit;border:1px solid var(--line);background:var(--card);border-radius:999px;
padding:4px 12px;cursor:pointer}
.filters button.on{background:var(--ink);color:#fff;border-color:var(--ink)}
#shown-count{margin-left:8px}
#cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:14px;padding:16px 28px 40px}
.card{display:flex;gap:14px;background:var(--card);border:1px solid var(--line);
border-left:6px solid var(--line);border-radius:10px;padding:12px}
.card[hidden]{display:none}
.c1{border-left-color:var(--s1)}.c2{border-left-color:var(--s2)}.c3{border-left-color:var(--s3)}
.c4{border-left-color:var(--s4)}.c5{border-left-color:var(--s5)}
.cerror{border-left-color:var(--err);background:#fff5f4}
.thumb{width:160px;height:160px;flex:none;border-radius:8px;object-fit:contain;background:#eef0f3}
.thumb.missing{display:flex;flex-direction:column;align-items:center;justify-content:center;
text-align:center;color:var(--muted);font-size:13px;padding:8px;overflow-wrap:anywhere}
.body{flex:1;min-width:0}
.card header{display:flex;justify-content:space-between;align-items:center;gap:8px}
.rid{font-weight:600;overflow-wrap:anywhere}
.badge{border-radius:999px;padding:2px 10px;color:#fff;font-weight:700;background:var(--muted)}
.b1{background:var(--s1)}.b2{background:var(--s2)}.b3{background:var(--s3)}.b4{background:var(--s4)}
.b5{background:var(--s5)}.berror{background:var(--err)}
.expected{margin:6px 0}
.probs{margin:4px 0 8px}
.prob{display:flex;align-items:center;gap:6px;font-size:12px}
.prob .k{width:12px;text-align:right}
.prob.chosen{font-weight:700}
.track{flex:1;height:9px;background:#eef0f3;border-radius:5px;overflow:hidden}
.fill{display:block;height:100%}
.pct{width:48px;text-align:right;color:var(--muted)}
.field h4{margin:8px 0 2px;font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.field p{margin:0;white-space:pre-wrap;overflow-wrap:anywhere}
.errmsg p{color:var(--err);font-weight:600}
details{margin-top:8px}
summary{cursor:pointer;color:var(--muted);font-size:13px}
@media (max-width:560px){#cards{grid-template-columns:1fr;padding:12px}.card{flex-direction:column}
.thumb{width:100%;height:auto}}
@media print{.filters{display:none}.card{break-inside:avoid}}
"""

SCRIPT = """
(function () {
  var cards = Array.prototype.slice.call(document.querySelectorAll('#cards .card'));
  var buttons = Array.prototype.slice.call(document.querySelectorAll('#filters button'));
  var counter = document.getElementById('shown-count');
  var selection = [];
  var known = buttons.map(function (button) { return button.getAttribute('data-filter'); });
  function decoded(text) {
    try { return decodeURIComponent(text); } catch (e) { return text; }  /* '%' or '%zz': keep it raw */
  }
  function fromHash() {
    var hash = '';
    try { hash = String(window.location.hash || ''); } catch (e) { return []; }
    var match = /(?:^#|&)filter=([^&]*)/.exec(hash);
    if (!match) { return []; }
    return decoded(match[1]).split(',').filter(function (f) { return f !== 'all' && known.indexOf(f) >= 0; });
  }
  function apply() {
    var shown = 0;
    cards.forEach(function (card) {
      var visible = selection.length === 0 || selection.indexOf(card.getAttribute('data-score')) >= 0;
      card.hidden = !visible;
      if (visible) { shown += 1; }
    });
    buttons.forEach(function (button) {
      var f = button.getAttribute('data-filter');
      var on = selection.length === 0 ? f === 'all' : selection.indexOf(f) >= 0;
      button.classList.toggle('on', on);
      button.setAttribute('aria-pressed', on ? 'true' : 'false');
    });
    counter.textContent = shown + ' of ' + cards.length + ' rows shown';
    document.body.setAttribute('data-shown', String(shown));
    document.body.setAttribute('data-filter', selection.length ? selection.join(',') : 'all');
  }
  function remember() {
    var path = window.location.pathname + window.location.search;
    var hash = selection.length ? '#filter=' + selection.join(',') : path;
    try { window.history.replaceState(null, '', hash); } catch (e) { /* file:// in some browsers */ }
  }
  buttons.forEach(function (button) {
    button.addEventListener('click', function () {
      var f = button.getAttribute('data-filter');
      var at = selection.indexOf(f);
      if (f === 'all') { selection = []; }
      else if (at >= 0) { selection.splice(at, 1); }
      else { selection.push(f); }
      remember();
      apply();
    });
  });
  window.addEventListener('hashchange', function () { selection = fromHash(); apply(); });
  selection = fromHash();
  apply();
})();
"""
