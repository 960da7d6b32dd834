"""The ``rnnlab serve`` pages in a real browser: Debian's chromium driven by chromium-driver
through Selenium, against a real server on 127.0.0.1. Typing a review updates the prediction and
the token colours; a stroke drawn with pointer events (mouse and touch) brings the digit
probabilities; every page's screenshot is not blank.

A language model's page streams generated tokens, coloured by the chosen unit, with their
top-5 alternatives under the pointer.

Without chromium, chromedriver or selenium these tests skip, except under CI (CI=true), where
they fail: CI installs all three (ci/chromium.sh, the dev extra).
"""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from browser import CHROMIUM, HEADLESS_FLAGS
from serve_runs import make_runs, start_server, stop_server

CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium
except ImportError:
    selenium = None
NEEDED = (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER), ("selenium", selenium))
MISSING = [name for name, found in NEEDED if found is None]
IN_CI = os.environ.get("CI", "").lower() == "true"
pytestmark = pytest.mark.skipif(
    bool(MISSING) and not IN_CI, reason=f"not installed: {', '.join(MISSING)}"
)
FLAGS = [*HEADLESS_FLAGS, "--window-size=1280,1000"]
SCREENSHOTS = os.environ.get("RNNLAB_SCREENSHOTS")  # a folder to keep the screenshots in
WAIT = 60  # seconds: a loaded CI machine is slow, but a broken page never gets there


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    reviews, digits, _ = make_runs(tmp_path_factory.mktemp("serve"))
    process, url = start_server(str(reviews), str(digits))  # no language model
    yield url
    code, _, err = stop_server(process)
    assert code == 0, err


@pytest.fixture(scope="module")
def lm_server(tmp_path_factory):
    reviews, _, chars = make_runs(tmp_path_factory.mktemp("serve-lm"))
    process, url = start_server(str(chars), str(reviews))
    yield url
    code, _, err = stop_server(process)
    assert code == 0, err


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if MISSING:
        pytest.fail(f"CI expected chromium, chromedriver and selenium, got none of {MISSING}")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def wait_for(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition, message)


def not_blank(driver, name: str) -> np.ndarray:
    """The page's screenshot as (H, W, 3) floats, checked to have ink and colour."""
    from PIL import Image

    png = driver.get_screenshot_as_png()
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        (Path(SCREENSHOTS) / f"{name}.png").write_bytes(png)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64) / 255
    assert pixels.std() > 0.05, f"{name}: the screenshot is nearly one colour"
    assert len(np.unique((pixels * 15).round().reshape(-1, 3), axis=0)) > 20, name
    return pixels


def token_colours(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#tokens .tok .w'))"
        ".map(function (w) { return w.style.backgroundColor; });"
    )


def test_typing_a_review_updates_prediction_and_colours(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(server + "text?run=reviews")
    wait_for(browser, lambda d: len(token_colours(d)) > 10, "the sample review's tokens")
    box = browser.find_element(By.ID, "text")
    box.clear()
    box.send_keys("a wonderful film , i loved every minute")  # 7 words and the start marker
    wait_for(browser, lambda d: len(token_colours(d)) == 9, "tokens of the typed review")
    prediction = browser.find_element(By.ID, "prediction").text
    assert re.match(r"Prediction: (negative|positive) \(0\.\d{3}\) after 9 tokens", prediction)
    colours = token_colours(browser)
    assert all(re.match(r"rgba?\((214, 39, 40|31, 119, 180)", c) for c in colours), colours
    assert len(set(colours)) > 3  # the unit's cell state varies along the review
    words = [w.text for w in browser.find_elements(By.CSS_SELECTOR, "#tokens .tok .w")]
    assert words == ["[START]", "a", "wonderful", "film", ",", "i", "loved", "every", "minute"]

    box.send_keys(" but the ending was awful")
    wait_for(browser, lambda d: len(token_colours(d)) == 14, "tokens after more typing")
    assert "after 14 tokens" in browser.find_element(By.ID, "prediction").text

    Select(browser.find_element(By.ID, "mode")).select_by_value("f")  # a unit's forget gate
    greens = token_colours(browser)
    assert all(re.match(r"rgba?\(44, 160, 44", c) for c in greens), greens[:3]
    ActionChains(browser).move_to_element(
        browser.find_elements(By.CSS_SELECTOR, "#tokens .tok")[2]
    ).perform()
    wait_for(browser, lambda d: "wonderful" in d.find_element(By.ID, "hover-word").text, "hover")
    rows = browser.find_elements(By.CSS_SELECTOR, "#hover-table tr")
    assert len(rows) == 1 + 8 + 1  # header, chosen unit and 7 more active ones, mean
    assert len(browser.find_elements(By.CSS_SELECTOR, "#top-units button")) == 8
    not_blank(browser, "text")


def _probabilities(driver) -> list[float]:
    lines = driver.execute_script(
        "return Array.from(document.querySelectorAll('#probs .class-prob'))"
        ".map(function (d) { return d.textContent; });"
    )
    return [float(line.split()[1]) for line in lines]


def test_drawing_a_stroke_brings_probabilities(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By

    browser.get(server + "digit")
    pad = browser.find_element(By.ID, "pad")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#run option"), "the runs")
    assert _probabilities(browser) == []
    mouse = ActionChains(browser).move_to_element_with_offset(pad, 0, -90).click_and_hold()
    for _ in range(9):
        mouse = mouse.move_by_offset(2, 20)
    mouse.release().perform()
    wait_for(browser, lambda d: len(_probabilities(d)) == 10, "probabilities after a stroke")
    assert sum(_probabilities(browser)) == pytest.approx(1.0, abs=0.02)
    maps = browser.find_elements(By.CSS_SELECTOR, "#heatmaps canvas")
    assert len(maps) == 6  # i, f, g, o, c, h
    ink = browser.execute_script(
        "var c = document.getElementById('seen').getContext('2d');"
        "var d = c.getImageData(0, 0, 28, 28).data, n = 0;"
        "for (var k = 0; k < d.length; k += 4) { if (d[k] > 128) { n++; } } return n;"
    )
    assert 10 < ink < 28 * 28 / 2  # the stroke, scaled into 28x28 as MNIST draws digits
    not_blank(browser, "digit")

    browser.find_element(By.ID, "clear").click()
    assert _probabilities(browser) == []
    finger = ActionBuilder(browser, mouse=PointerInput(interaction.POINTER_TOUCH, "finger"))
    box = pad.rect
    x, y = int(box["x"] + 80), int(box["y"] + 80)
    finger.pointer_action.move_to_location(x, y).pointer_down()
    for k in range(1, 8):
        finger.pointer_action.move_to_location(x + 15 * k, y + 12 * k)
    finger.pointer_action.pointer_up()
    finger.perform()
    wait_for(browser, lambda d: len(_probabilities(d)) == 10, "probabilities after a touch")


def test_runs_page_shows_each_run(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server + "runs")
    wait_for(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".status.finished")) == 2,
        "both runs' status",
    )
    cards = browser.find_elements(By.CSS_SELECTOR, ".card")
    assert [c.find_element(By.TAG_NAME, "h2").text for c in cards] == [
        "[0] reviews finished",
        "[1] digits finished",
    ]
    assert "test_accuracy" in cards[0].find_element(By.CSS_SELECTOR, "table.report").text
    assert "4 metric records" in cards[1].find_element(By.CSS_SELECTOR, ".meta").text
    red = browser.execute_script(  # the loss curve is drawn in red on the canvas
        "var c = document.querySelector('#run-0 canvas').getContext('2d');"
        "var d = c.getImageData(0, 0, 640, 240).data, n = 0;"
        "for (var k = 0; k < d.length; k += 4) { if (d[k] > 180 && d[k + 2] < 90) { n++; } }"
        "return n;"
    )
    assert red > 100
    not_blank(browser, "runs")


def test_language_model_page_is_hidden_without_one(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server)
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#list li")) == 2, "runs")
    link = browser.find_element(By.CSS_SELECTOR, "nav a[data-page=lm]")
    assert not link.is_displayed()
    assert browser.find_element(By.CSS_SELECTOR, "nav a[data-page=text]").is_displayed()
    not_blank(browser, "index")
    browser.get(server + "lm")
    wait_for(browser, lambda d: d.find_element(By.ID, "none").is_displayed(), "the notice")
    assert not browser.find_element(By.ID, "lm-ui").is_displayed()
    not_blank(browser, "lm-none")


def _streamed(driver) -> list[dict]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#stream .tok'))"
        ".map(function (t) { return {text: t.textContent, value: t.getAttribute('data-value'),"
        " colour: t.style.backgroundColor}; });"
    )


def test_generation_streams_in_coloured_with_alternatives_on_hover(lm_server, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(lm_server)
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#list li")) == 2, "runs")
    assert "char vocabulary of 31 tokens" in browser.find_element(By.ID, "list").text
    link = browser.find_element(By.CSS_SELECTOR, "nav a[data-page=lm]")
    assert link.is_displayed()  # a language model is served: its page is in the navigation
    link.click()
    wait_for(browser, lambda d: d.find_element(By.ID, "lm-ui").is_displayed(), "the LM page")
    assert not browser.find_element(By.ID, "none").is_displayed()
    units = Select(browser.find_element(By.ID, "unit"))
    assert len(units.options) == 10  # the run's 10 units
    units.select_by_value("4")
    for name, value in (("max-tokens", "400"), ("temperature", "1.2"), ("seed", "7")):
        box = browser.find_element(By.ID, name)
        box.clear()
        box.send_keys(value)
    browser.execute_script(  # the token count each time the page changes
        "window.counts = []; new MutationObserver(function () {"
        " window.counts.push(document.querySelectorAll('#stream .tok').length); })"
        ".observe(document.getElementById('stream'), {childList: true});"
    )
    browser.find_element(By.ID, "go").click()
    wait_for(browser, lambda d: "done" in d.find_element(By.ID, "status").text, "done")
    assert len(_streamed(browser)) == 400
    counts = browser.execute_script("return window.counts;")
    assert len({c for c in counts if 0 < c < 400}) > 3, counts  # streamed, not all at once
    tokens = _streamed(browser)
    colours = [t["colour"] for t in tokens]
    assert all(re.match(r"rgba?\((214, 39, 40|31, 119, 180)", c) for c in colours), colours[:3]
    assert len(set(colours)) > 10  # unit 4's cell state moves along the text
    assert browser.find_element(By.CSS_SELECTOR, "#stream .prompt").text == "This movie was"

    units.select_by_value("7")  # another unit recolours the same text, no new generation
    wait_for(browser, lambda d: [t["colour"] for t in _streamed(d)] != colours, "recoloured")
    assert [t["text"] for t in _streamed(browser)] == [t["text"] for t in tokens]

    ActionChains(browser).move_to_element(
        browser.find_elements(By.CSS_SELECTOR, "#stream .tok")[5]
    ).perform()
    wait_for(browser, lambda d: "token 6" in d.find_element(By.ID, "hover-token").text, "hover")
    rows = browser.find_elements(By.CSS_SELECTOR, "#alternatives .alt")
    assert len(rows) == 5
    probabilities = [float(r.text.split()[-1]) for r in rows]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1
    assert "drawn:" in browser.find_element(By.ID, "alternatives").text
    not_blank(browser, "lm")
