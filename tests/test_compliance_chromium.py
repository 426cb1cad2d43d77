"""The compliance report in a real headless Chromium (driven over the DevTools pipe): the rule tables, the
audit block, the filters and the search work on the page, ``#decision=`` applies on load, hostile rows stay
text, and in print media the controls are hidden, the cards kept whole and the evidence expanded."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edgejudge.report import write_report
from tests.helpers.compliance_cdp import CHROMIUM_FLAGS, Browser
from tests.helpers.compliance_logs import policy_log

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOWN = "[...document.querySelectorAll('#cards .card')].filter(c => !c.hidden).map(c => c.dataset.id)"


def _set(browser: Browser, selector: str, value: str, event: str) -> list[str]:
    """Set a control's value as a person would (then the event a person's change fires); the cards shown."""
    browser.evaluate(
        f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
        f" el.value = {json.dumps(value)};"
        f" el.dispatchEvent(new Event({json.dumps(event)}, {{bubbles: true}})); }})()"
    )
    return browser.evaluate(SHOWN)


@pytest.fixture()
def page_url(work_dir: Path) -> str:
    assert Path(CHROMIUM).exists(), "install chromium (apt-get install -y chromium): the report test needs it"
    html_path = work_dir / "compliance.html"
    write_report(policy_log(work_dir), html_path)
    return html_path.resolve().as_uri()


def test_compliance_report_filters_and_search_in_chromium(page_url: str, work_dir: Path) -> None:
    with Browser(CHROMIUM, work_dir / "profile") as browser:
        browser.open(page_url + "#decision=violation")
        assert browser.evaluate(SHOWN) == ["bad", "unsure"]
        assert browser.evaluate("document.body.dataset.shown") == "2"
        assert browser.evaluate("document.getElementById('f-decision').value") == "violation"
        assert browser.evaluate("document.getElementById('shown-count').textContent") == "2 of 5 items shown"
        assert browser.evaluate("document.querySelectorAll('table.rules').length") == 5
        assert browser.evaluate("document.querySelectorAll('table.rules tbody tr').length") == 15
        assert "judge-mmproj.gguf" in browser.evaluate("document.getElementById('audit').innerText")
        assert browser.evaluate("document.body.hasAttribute('data-pwned')") is False
        assert browser.evaluate("document.querySelectorAll('script').length") == 1

        assert _set(browser, "#f-severity", "critical", "change") == ["bad"]
        assert "severity=critical" in browser.evaluate("location.hash")
        assert _set(browser, "#f-decision", "", "change") == ["bad"]  # severity still applies
        assert _set(browser, "#f-severity", "", "change") == [
            "clean",
            "bad",
            "unsure",
            "broken",
            '"><script>x</script>',
        ]
        assert _set(browser, "#f-rule", "misleading-claims", "change") == ["unsure", "broken"]
        assert len(_set(browser, "#f-rule", "", "change")) == 5

        assert _set(browser, "#f-q", "HANDGUN", "input") == ["bad"]  # feedback, any case
        assert "q=HANDGUN" in browser.evaluate("location.hash")
        assert _set(browser, "#f-q", "like new", "input") == ["unsure"]
        assert _set(browser, "#f-q", "brok", "input") == ["broken"]  # the id
        assert _set(browser, "#f-q", "red bicycle", "input") == [
            "clean",
            "bad",
            "unsure",
            "broken",
        ]  # response
        assert _set(browser, "#f-q", "second-hand", "input") == []  # the instruction is not searched
        browser.evaluate("document.getElementById('f-clear').click()")
        assert len(browser.evaluate(SHOWN)) == 5

        browser.evaluate("location.hash = '#decision=%zz&rule=nope&severity=major&q=LIKE'")
        browser.evaluate("new Promise(r => setTimeout(r, 100))")
        assert browser.evaluate(SHOWN) == ["unsure"]  # bad values ignored; major and "like" in its feedback
        assert browser.evaluate("document.getElementById('f-rule').value") == ""
        assert browser.exceptions == []


def test_compliance_report_print_media_in_chromium(page_url: str, work_dir: Path) -> None:
    with Browser(CHROMIUM, work_dir / "profile") as browser:
        browser.open(page_url)
        style = "(s => getComputedStyle(document.querySelector(s)).display)"
        assert browser.evaluate(f"{style}('#filters')") == "flex"
        assert browser.evaluate("[...document.querySelectorAll('details')].some(d => d.open)") is False
        browser.media("print")
        assert browser.evaluate("matchMedia('print').matches") is True
        assert browser.evaluate(f"{style}('#filters')") == "none"
        for control in ("#f-q", "#f-decision", "#f-clear"):  # not drawn: no box
            assert browser.evaluate(f"document.querySelector('{control}').getClientRects().length") == 0
        assert browser.evaluate("getComputedStyle(document.querySelector('.card')).breakInside") == "avoid"
        assert browser.evaluate("[...document.querySelectorAll('details')].every(d => d.open)") is True
        visible = "document.querySelector('.evidence .ev p').getBoundingClientRect().height"
        assert browser.evaluate(visible) > 0
        assert browser.evaluate("document.getElementById('filters').getBoundingClientRect().height") == 0

    pdf = work_dir / "report.pdf"
    done = subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={work_dir / 'pdf-profile'}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={pdf}",
            page_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and data.count(b"/Type /Page") - data.count(b"/Type /Pages") >= 2
