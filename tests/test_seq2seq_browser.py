"""The ``translate`` page of ``rnnlab serve`` in a real browser (Debian's chromium through
Selenium, as tests/test_serve_browser.py): typing a source brings its n-best outputs with their
log-probabilities and the attention matrix of the best, each row summing to 1; clicking another
output draws its matrix; the page's link shows in the navigation bar only when a seq2seq run is
served. Skips without chromium, chromedriver or selenium, except under CI (CI=true)."""

from __future__ import annotations

import pytest

from seq2seq_helpers import train_tiny
from serve_runs import start_server, stop_server
from test_serve_browser import IN_CI, MISSING, browser, not_blank, wait_for  # noqa: F401

pytestmark = pytest.mark.skipif(
    bool(MISSING) and not IN_CI, reason=f"not installed: {', '.join(MISSING)}"
)


@pytest.fixture(scope="module")
def s2s_server(tmp_path_factory):
    run = train_tiny(tmp_path_factory.mktemp("s2s-serve"))
    process, url = start_server(str(run))
    yield url
    code, _, err = stop_server(process)
    assert code == 0, err


def _texts(driver, selector: str) -> list[str]:
    """The text of every element under ``selector``, read in one script (no stale elements
    while the page redraws)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(function (e) { return e.textContent; });",
        selector,
    )


def _weights(driver) -> list[list[float]]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#attention tr')).slice(1).map("
        "function (tr) { return Array.from(tr.querySelectorAll('td.att')).map("
        "function (td) { return Number(td.getAttribute('data-weight')); }); });"
    )


def test_typing_a_source_shows_n_best_and_attention(s2s_server, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    browser.get(s2s_server + "translate")
    wait_for(browser, lambda d: d.find_element(By.ID, "translate-ui").is_displayed(), "the page")
    link = browser.find_element(By.CSS_SELECTOR, 'nav a[data-page="translate"]')
    assert link.is_displayed() and "here" in link.get_attribute("class")
    box = browser.find_element(By.ID, "source")
    box.clear()
    box.send_keys("abcde")
    wait_for(
        browser,
        lambda d: (
            _texts(d, "#attention tr:first-child th") == ["", "a", "b", "c", "d", "e"]
            and len(_texts(d, "#outputs li")) == 3
        ),
        "three outputs and a matrix over the five source letters",
    )
    outputs = _texts(browser, "#outputs li")
    assert all("log p = -" in o for o in outputs), outputs
    weights = _weights(browser)
    assert weights and all(len(row) == 5 for row in weights)
    assert all(abs(sum(row) - 1) < 0.01 for row in weights), weights
    browser.find_elements(By.CSS_SELECTOR, "#outputs li")[2].click()
    wait_for(
        browser,
        lambda d: (
            "best" in d.find_elements(By.CSS_SELECTOR, "#outputs li")[2].get_attribute("class")
        ),
        "the third output chosen",
    )
    not_blank(browser, "translate")
