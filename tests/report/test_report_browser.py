"""report.html in a real headless browser (Debian's chromium + chromedriver through selenium).

The page must load from file:// with no console error and no network request but itself, show its
tables and matplotlib plots (inline SVG), and is photographed at 390 px (a phone) and 1280 px width,
full page height: into the test's temporary folder, or into ``$POT_SCREENSHOT_DIR`` when set (the
committed ``docs/report_screenshots/`` were made with ``POT_SCREENSHOT_DIR=docs/report_screenshots``;
look at them after a change of the page).

Skips when chromium, chromedriver or selenium are missing (a fresh machine: ``.ci/run`` installs
them with apt-get).
"""
from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from pot_cli.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHOTS_ENV = "POT_SCREENSHOT_DIR"
CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p and Path(p).is_file()), None)
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="chromium and chromedriver not installed (Debian: apt-get install -y chromium "
                                       "chromium-driver; .ci/run does it)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e .[test])")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    yield driver
    driver.quit()


def _pot(*args) -> None:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def pages(tmp_path_factory, shared_dir, repo_root) -> dict[str, Path]:
    """Three report pages: mobilenet_v2 with the speed check, fmnist_cnn with AccuracyAware steps,
    and mobilenet_v2 from the real ``mobilenetV2_tf_int8_sqnr.json`` (QuantNoiseEstimator) with
    ``--analyze``."""
    out = tmp_path_factory.mktemp("report_pages")
    _pot("-q", "default", "-m", shared_dir / "models/mobilenet_v2/mobilenet_v2.xml", "--data-source",
         shared_dir / "data/images", "--target-device", "CPU", "--output-dir", out / "mb", "-d")
    _pot("-q", "accuracy_aware", "-m", shared_dir / "models/fmnist_cnn/fmnist_cnn.xml", "--ac-config",
         repo_root / "configs/examples/fmnist_ac.yml", "--max-drop", "0.001", "--output-dir", out / "aa", "-d")
    _pot("-c", repo_root / "configs/examples/pot/mobilenetV2_tf_int8_sqnr.json", "--analyze", "--output-dir",
         out / "sqnr", "-d")
    return {"mobilenet_v2_speed_check": out / "mb/optimized/report.html",
            "fmnist_cnn_accuracy_aware": out / "aa/optimized/report.html",
            "mobilenet_v2_analysis_quant_noise": out / "sqnr/optimized/report.html"}


def _open(driver, path: Path) -> str:
    url = path.resolve().as_uri()
    driver.get_log("browser")
    driver.get_log("performance")  # drop what earlier pages logged
    driver.get(url)
    assert driver.execute_script("return document.readyState") == "complete"
    return url


def _checks(driver, url: str) -> None:
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    assert requests and all(r == url for r in requests), requests
    # no external resource referenced at all
    assert not driver.execute_script(
        "return [...document.querySelectorAll('script,link,img,iframe,object,embed,[src]')].length")


def _screenshot(driver, name: str, width: int, folder: Path) -> Path:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": width < 600})
    height = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
    # the page must not be wider than the screen: wide tables and plots scroll inside their box
    assert driver.execute_script("return document.documentElement.scrollWidth") <= width
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_{width}.png"
    # a 256-colour palette: text and flat plots lose nothing visible, the files shrink about 3x
    Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB").quantize(256).save(path, optimize=True)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return path


def _dom(driver) -> dict:
    return driver.execute_script("""
        const ids = [...document.querySelectorAll('h2[id]')].map(h => h.id);
        return {ids: ids, tables: document.querySelectorAll('table').length,
                svgs: [...document.querySelectorAll('svg.pot-plot')].map(s => s.getAttribute('aria-label')),
                svgRects: [...document.querySelectorAll('svg.pot-plot')].map(s => s.getBoundingClientRect().width),
                fq: document.querySelectorAll('#quantizers ~ details tbody tr').length,
                snippet: (document.getElementById('ignored-snippet') || {}).textContent || null,
                title: document.title};""")


@pytest.mark.parametrize("name", ["mobilenet_v2_speed_check", "fmnist_cnn_accuracy_aware",
                                  "mobilenet_v2_analysis_quant_noise"])
def test_report_page_in_chromium(browser, pages, name, tmp_path):
    url = _open(browser, pages[name])
    _checks(browser, url)
    dom = _dom(browser)
    report = json.loads(pages[name].with_name("report.json").read_text())
    assert dom["title"].startswith("pot report")
    assert {"times", "float", "quantizers"} <= set(dom["ids"])
    assert dom["tables"] >= 4 and all(w > 100 for w in dom["svgRects"])
    assert dom["fq"] == len(report["quantizers"])
    if name == "mobilenet_v2_speed_check":
        assert "speed" in dom["ids"] and any("FP32 vs INT8" in s for s in dom["svgs"])
    elif name == "fmnist_cnn_accuracy_aware":
        assert "accuracy-aware" in dom["ids"] and "Accuracy drop against iteration" in dom["svgs"]
        assert "Multiply_3149" in browser.find_element("id", "float").find_element("xpath", "..").text
    else:
        assert {"analysis", "quant-noise"} <= set(dom["ids"])
        assert any(s.startswith("Output SQNR per group") for s in dom["svgs"])
        assert any(s.startswith("Noisiest layers") for s in dom["svgs"])
        assert json.loads(dom["snippet"])["ignored"]["scope"] == report["analysis"]["recommendation"]["ignored_scope"]
        assert report["analysis"]["rows"][0]["group"] in browser.find_element("id", "analysis").find_element(
            "xpath", "..").text
    import os

    folder = Path(os.environ[SHOTS_ENV]) if os.environ.get(SHOTS_ENV) else tmp_path / "screenshots"
    for width in (390, 1280):
        assert _screenshot(browser, name, width, folder).stat().st_size > 10_000
