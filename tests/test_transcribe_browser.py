"""The transcribe page in Debian's chromium: its microphone is chromium's fake audio capture fed
a WAV file (``--use-fake-device-for-media-stream --use-file-for-fake-audio-capture=...``), the
page records it through getUserMedia, resamples it with Web Audio, sends it as a WAV, and shows
the transcript; a line written with the mouse is read too.

The run is digits-ctc-sample trained for 20 epochs; the WAV is one of its own training strings
(so the right transcript is known and the model has learnt it) followed by low noise, as the
strings' gaps are. Skips without chromium, chromedriver or selenium, as the other browser tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from browser import CHROMIUM, HEADLESS_FLAGS
from rnnlab.config import load_preset
from rnnlab.data.strings import NOISE
from rnnlab.predict import predict_each
from rnnlab.runs import train
from rnnlab.tasks.ctc_data import build_strings
from serve_runs import start_server, stop_server
from test_serve_browser import CHROMEDRIVER, MISSING, wait_for

pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)}")


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    """(run, fake microphone WAV, its digits)."""
    root = tmp_path_factory.mktemp("transcribe")
    train("digits-ctc-sample", root / "run", overrides=["train.epochs=20", "run.log_every=1000"])
    strings = build_strings(load_preset("digits-ctc-sample"), None)["train"]
    string = next(s for s in strings if len(s.digits) == 2)
    rng = np.random.default_rng(0)
    tail = rng.normal(0, NOISE, 3 * 8000).astype(np.float32)  # the capture loops: noise after
    wav = root / "mic.wav"
    soundfile.write(str(wav), np.concatenate([string.signal, tail]), 8000, subtype="PCM_16")
    digits = "".join(map(str, string.digits))
    (heard,) = predict_each(root / "run", [wav], verb="transcribe")
    assert heard["transcript"] == digits  # the file itself, read as any WAV
    return root / "run", wav, digits


@pytest.fixture(scope="module")
def page(spoken, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    run, wav, _ = spoken
    lines = run.parent / "lines"
    train("mnist-lines-sample", lines, overrides=["train.epochs=1", "run.log_every=1000"])
    process, url = start_server(str(run), str(lines))
    options = Options()
    options.binary_location = CHROMIUM
    flags = [
        *HEADLESS_FLAGS,
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('profile')}",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
    ]
    for flag in flags:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver, url
    driver.quit()
    code, _, err = stop_server(process)
    assert code == 0, err


def test_recording_from_the_microphone_shows_the_transcript(spoken, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, _, digits = spoken
    driver, url = page
    driver.get(url + "transcribe")
    wait_for(driver, lambda d: d.find_element(By.ID, "run").text, "the run picker")
    assert "hidden" not in driver.find_element(By.ID, "audio-box").get_attribute("class")
    Select(driver.find_element(By.ID, "seconds")).select_by_visible_text("2")
    driver.find_element(By.ID, "record").click()
    shown = wait_for(
        driver,
        lambda d: (
            (t := d.find_element(By.ID, "transcript").text) not in ("", "...", "recording...") and t
        ),
        "a transcript",
    )
    assert driver.find_element(By.ID, "error").text == ""
    assert shown == digits
    assert driver.execute_script("return document.getElementById('posteriogram').height") == 11 * 12
    alignment = driver.find_element(By.ID, "alignment").text
    assert alignment.replace("-", "")[:1] == digits[0]


def test_writing_a_line_with_the_mouse_reads_it(page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, url = page
    driver.get(url + "transcribe?run=lines")
    wait_for(driver, lambda d: d.find_element(By.ID, "run").text, "the run picker")
    Select(driver.find_element(By.ID, "run")).select_by_value("lines")
    assert "hidden" not in driver.find_element(By.ID, "line-box").get_attribute("class")
    pad = driver.find_element(By.ID, "pad")
    strokes = ActionChains(driver).move_to_element_with_offset(pad, -250, -40).click_and_hold()
    strokes.move_by_offset(0, 80).release()  # a 1
    strokes.move_to_element_with_offset(pad, -150, -40).click_and_hold()
    strokes.move_by_offset(40, 0).move_by_offset(-40, 80).release()  # a 7
    strokes.perform()
    wait_for(
        driver,
        lambda d: d.find_element(By.ID, "transcript").text not in ("", "..."),
        "a transcript of the line",
    )
    assert driver.find_element(By.ID, "error").text == ""
    heights = driver.execute_script(
        "return [document.getElementById('frames').height, "
        "document.getElementById('posteriogram').height]"
    )
    assert heights == [32, 11 * 12]  # the 32 pixel rows read per column; 11 symbols
    width = driver.execute_script("return document.getElementById('frames').width")
    assert width == 160  # the 640x128 pad scaled to 32 rows: 160 columns, one frame each
