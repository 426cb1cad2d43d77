"""The inline stylesheet and script of the compliance report (``edgejudge.compliance``); constants only.

The stylesheet is added after the plain report's (``_report_assets.CSS``). Its print rules hide the
controls, keep each card on one page, expand the evidence and drop the card grid, so the browser's "Save
as PDF" gives a clean document.

The script filters the cards: a decision, a rule (cards where that rule did not pass), a severity (of the
decision, or of a rule that did not pass) and a search box (case-insensitive text over the id, the response
and the feedback). The choice is mirrored in the URL (``#decision=violation&rule=r1&severity=major&q=word``)
so a link keeps it and a page opened with one applies it on load; values that name no option are ignored,
a malformed escape is read as typed, never an exception. ``body[data-shown]`` and ``#shown-count`` say how
many cards show. Before printing (and in print media) every evidence block is opened.
"""

from __future__ import annotations

__all__ = ["COMPLIANCE_CSS", "COMPLIANCE_SCRIPT"]

COMPLIANCE_CSS = """
.compliance #cards{grid-template-columns:repeat(auto-fill,minmax(560px,1fr))}
.filters label{display:flex;gap:6px;align-items:center;font-size:14px}
.filters select,.filters input{font:inherit;border:1px solid var(--line);border-radius:8px;padding:3px 8px;
background:var(--card)}
.d-compliant{border-left-color:var(--s5)}.d-violation{border-left-color:var(--s1)}
.d-needs_review{border-left-color:var(--s3)}.d-error{border-left-color:var(--err);background:#fff5f4}
.bd-compliant{background:var(--s5)}.bd-violation{background:var(--s1)}.bd-needs_review{background:#b58105}
.bd-error{background:var(--err)}
.d-incomplete{border-left-color:var(--muted);border-left-style:dashed}.bd-incomplete{background:var(--muted)}
.incomplete-note{margin:0 28px;padding:6px 12px;border:1px dashed var(--muted);border-radius:8px}
.card.overridden .badge{outline:3px double var(--ink)}
.decision{margin:6px 0}
table.rules,table.grid,table.audit-table{border-collapse:collapse;font-size:13px;margin:6px 0;width:100%}
table.rules th,table.rules td,table.grid th,table.grid td,table.audit-table th,table.audit-table td{
border:1px solid var(--line);padding:3px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
table.rules small{display:block;color:var(--muted)}
table.rules th,table.rules td:not(.rule){overflow-wrap:normal;white-space:nowrap}
.compliance .thumb{width:128px;height:128px}
.st-fail td{background:#fdecea}.st-uncertain td{background:#fff6d6}.st-error td{background:#fbe4e2}
.rulesum,.audit,.views{padding:8px 28px}
table.grid{background:var(--card);width:auto;min-width:50%}
table.audit-table th{width:14em;color:var(--muted);font-weight:600}
.run{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:8px 14px;margin:8px 0}
.run h3{margin:4px 0;font-size:15px}
.nr{color:var(--muted);font-style:italic}
.errmsg{color:var(--err);font-weight:600}
@media print{
.controls,.filters,#f-clear{display:none !important}
body{background:#fff;font-size:12px}
#cards{display:block;padding:0 12px}
.card{break-inside:avoid;page-break-inside:avoid;margin:0 0 10px;border:1px solid #999;border-left-width:6px}
.rulesum,.audit,.views,header.top,.summary{padding-left:12px;padding-right:12px}
.run,table{break-inside:avoid}
details>summary{list-style:none}
details::details-content{content-visibility:visible;display:block}
}
"""

COMPLIANCE_SCRIPT = """
(function () {
  var cards = Array.prototype.slice.call(document.querySelectorAll('#cards .card'));
  var selects = Array.prototype.slice.call(document.querySelectorAll('#filters select'));
  var search = document.getElementById('f-q');
  var counter = document.getElementById('shown-count');
  var state = {decision: '', rule: '', severity: '', q: ''};
  function decoded(text) {
    try { return decodeURIComponent(text.replace(/\\+/g, ' ')); } catch (e) { return text; }
  }
  function allowed(key, value) {
    if (key === 'q') { return true; }
    var select = document.getElementById('f-' + key);
    if (!select) { return false; }
    return Array.prototype.some.call(select.options, function (o) { return o.value === value; });
  }
  function fromHash() {
    var hash = '';
    try { hash = String(window.location.hash || '').replace(/^#/, ''); } catch (e) { hash = ''; }
    var next = {decision: '', rule: '', severity: '', q: ''};
    hash.split('&').forEach(function (part) {
      var at = part.indexOf('=');
      if (at < 0) { return; }
      var key = part.slice(0, at), value = decoded(part.slice(at + 1));
      if (Object.prototype.hasOwnProperty.call(next, key) && allowed(key, value)) { next[key] = value; }
    });
    return next;
  }
  function rulesOf(card) {
    try {
      var rules = JSON.parse(card.getAttribute('data-rules') || '[]');
      return Array.isArray(rules) ? rules : [];
    } catch (e) { return []; }
  }
  function textOf(card) {
    var parts = Array.prototype.map.call(
      card.querySelectorAll('.searchable, .searchable-field p'), function (el) { return el.textContent; });
    return parts.join('\\n').toLowerCase();
  }
  function severitiesOf(card) { return (card.getAttribute('data-severities') || '').split(' '); }
  var texts = cards.map(textOf);
  function apply() {
    var shown = 0, q = state.q.toLowerCase();
    cards.forEach(function (card, i) {
      var visible = (!state.decision || card.getAttribute('data-decision') === state.decision)
        && (!state.rule || rulesOf(card).indexOf(state.rule) >= 0)
        && (!state.severity || severitiesOf(card).indexOf(state.severity) >= 0)
        && (!q || texts[i].indexOf(q) >= 0);
      card.hidden = !visible;
      if (visible) { shown += 1; }
    });
    selects.forEach(function (select) { select.value = state[select.getAttribute('data-key')]; });
    if (search.value !== state.q) { search.value = state.q; }
    counter.textContent = shown + ' of ' + cards.length + ' items shown';
    document.body.setAttribute('data-shown', String(shown));
  }
  function remember() {
    var parts = [];
    ['decision', 'rule', 'severity', 'q'].forEach(function (key) {
      if (state[key]) { parts.push(key + '=' + encodeURIComponent(state[key])); }
    });
    var url = parts.length ? '#' + parts.join('&') : window.location.pathname + window.location.search;
    try { window.history.replaceState(null, '', url); } catch (e) { /* file:// in some browsers */ }
  }
  selects.forEach(function (select) {
    select.addEventListener('change', function () {
      state[select.getAttribute('data-key')] = select.value; remember(); apply();
    });
  });
  search.addEventListener('input', function () { state.q = search.value; remember(); apply(); });
  document.getElementById('f-clear').addEventListener('click', function () {
    state = {decision: '', rule: '', severity: '', q: ''}; remember(); apply();
  });
  window.addEventListener('hashchange', function () { state = fromHash(); apply(); });
  function openAll() {
    Array.prototype.forEach.call(document.querySelectorAll('details'), function (d) { d.open = true; });
  }
  window.addEventListener('beforeprint', openAll);
  try {
    var print = window.matchMedia('print');
    if (print.matches) { openAll(); }
    print.addEventListener('change', function (e) { if (e.matches) { openAll(); } });
  } catch (e) { /* no matchMedia */ }
  state = fromHash();
  apply();
})();
"""
