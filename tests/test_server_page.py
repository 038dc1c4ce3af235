"""The server's page in a real headless browser: Debian's chromium and chromium-driver,
driven by selenium. It types a German sentence, presses Translate, reads the translation
back, checks that the attention heat map drew and that hovering each output word
highlights the source words aligned to it; a screenshot (hovering) goes to tmp_path."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the server needs the extra `serve` (FastAPI, uvicorn)")
pytest.importorskip("selenium", reason="needs selenium (the dev extra)")
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from seq2seq.server.app import create_app
from seq2seq.server.info import describe_model
from seq2seq.server.schemas import Settings
from seq2seq.translator import Translator

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SENTENCE = "dreiundzwanzig und vierzehn"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """Headless chromium; skips where it or its driver is not installed."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(
            "needs /usr/bin/chromium and /usr/bin/chromedriver: apt-get install "
            "chromium chromium-driver (.ci/run does)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1000,800")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def test_page_translates_and_draws_the_attention(
    browser: webdriver.Chrome, live_server: Callable[[Any], str], trained: Path, tmp_path: Path
) -> None:
    checkpoint = trained / "checkpoints" / "best.ckpt"
    translator = Translator.from_checkpoint(checkpoint, device="cpu")
    url = live_server(create_app(translator, describe_model([str(checkpoint)], Settings())))
    browser.get(url + "/")
    WebDriverWait(browser, 30).until(lambda b: "best" in b.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "beam").clear()
    browser.find_element(By.ID, "beam").send_keys("3")
    browser.find_element(By.ID, "source").send_keys(SENTENCE)
    browser.find_element(By.ID, "translate").click()
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".translation"))

    (shown,) = browser.find_elements(By.CSS_SELECTOR, ".translation")
    (best,) = translator.translate_nbest([SENTENCE], beam_size=3, attention=True)[0]
    assert shown.get_attribute("textContent") == best.text
    source, output = translator.pieces(SENTENCE, best)
    cells = browser.find_elements(By.CSS_SELECTOR, "svg.heatmap rect.cell")
    assert len(cells) == len(source) * len(output) > 0
    assert len({cell.get_attribute("fill") for cell in cells}) > 1  # shades, not one colour
    heatmap = browser.find_element(By.CSS_SELECTOR, "svg.heatmap")
    assert heatmap.size["width"] > 0 and heatmap.size["height"] > 0
    assert not browser.find_element(By.ID, "error").text

    aligned = {}  # output word -> source words, as the Python API aligns them
    for source_word, output_word in translator.alignment(SENTENCE, best):
        aligned.setdefault(output_word, set()).add(source_word)
    output_words = browser.find_elements(By.CSS_SELECTOR, ".translation span")
    source_words = browser.find_elements(By.CSS_SELECTOR, ".source span")
    assert len(output_words) == len(best.text.split()) == len(aligned) > 0
    assert len(source_words) == len(SENTENCE.split())
    for j, word in reversed(list(enumerate(output_words))):  # the first stays hovered
        ActionChains(browser).move_to_element(word).perform()
        marked = {i for i, w in enumerate(source_words) if "aligned" in w.get_attribute("class")}
        assert marked == aligned[j] and "hover" in word.get_attribute("class")
    screenshot = tmp_path / "page.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 0
