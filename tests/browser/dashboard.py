"""The dashboard in a real browser: headless Chromium driven by Selenium
(Debian's `chromium` and `chromium-driver`), against a running
`autotrain demo --keep-running` whose data holds two anomalies.

    python3 tests/browser/dashboard.py URL WRITER_TOKEN READER_TOKEN SCREENSHOT

Checks, failing with a message and exit status 1:
- the market chart renders with data: bars in the legend, a uPlot canvas
  with non-background pixels (and a screenshot written to SCREENSHOT);
- approving a held anomaly in the page moves its flag to `approved` and
  releases its bar (the bar's time appears among the chart's closes);
- a token without ml:write sees no decision button, and the server refuses
  the decision (403) when it is sent anyway.
"""

import json
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

URL, WRITER, READER, SCREENSHOT = sys.argv[1:5]


def api(path, token, method="GET", body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, json.loads(res.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def browser():
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--window-size=1400,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait(driver, what, predicate, timeout=60):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(lambda d: predicate(d))
    except Exception:
        error = driver.find_element(By.ID, "error").text
        sys.exit(f"FAIL: never {what} (page error: {error!r})")


def check(ok, message):
    if not ok:
        sys.exit("FAIL: " + message)


def pending_anomalies(token):
    status, flags = api("/api/flags?state=pending", token)
    check(status == 200, f"/api/flags answered {status}: {flags}")
    return [f for f in flags["items"] if f["kind"] == "anomaly" and f["state"] == "pending"]


def chart_times(token, instrument):
    status, chart = api("/api/instruments/" + urllib.request.quote(instrument, safe="") + "/chart?limit=5000", token)
    check(status == 200, f"chart answered {status}: {chart}")
    return {c[0] for c in chart["closes"]}


# --- the writer: chart, approval ------------------------------------------------
held = pending_anomalies(WRITER)
check(len(held) >= 2, f"the demo holds two anomalies, found {len(held)}")
target = held[0]
check(target["ts"] not in chart_times(WRITER, target["instrument"]), "a held bar is not among the closes")

driver = browser()
try:
    driver.get(URL + "/dashboard#token=" + WRITER)
    wait(driver, "signed in as the writer", lambda d: "writer" in d.find_element(By.ID, "identity").text)
    wait(driver, "a chart with bars", lambda d: d.execute_script(
        "const l = document.querySelector('#chart-counts'); const m = l && l.textContent.match(/^(\\d+) bars/); return m && Number(m[1]) > 0"))
    canvases = driver.find_elements(By.CSS_SELECTOR, "#chart canvas")
    check(len(canvases) == 1, f"one uPlot canvas, found {len(canvases)}")
    # The close line: dark, opaque pixels inside the plotting area (axes,
    # labels and the faint grid lie outside it or are translucent).
    inked = driver.execute_script("""
        const u = state.plot, b = u.bbox, c = u.ctx.canvas;
        const d = u.ctx.getImageData(b.left, b.top, b.width, b.height).data;
        let inked = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 128 && d[i] < 100 && d[i + 1] < 100 && d[i + 2] < 100) inked++;
        return [inked, b.width * b.height];
    """)
    check(inked[0] > 500, f"no price line drawn: {inked[0]} of {inked[1]} plot pixels")
    legend = driver.find_element(By.ID, "chart-counts").text
    posteriors = int(legend.split(" posteriors")[0].rsplit(" ", 1)[-1])
    check(posteriors > 0, f"no regimes behind the chart: {legend!r}")
    shaded = driver.execute_script("""
        const u = state.plot, b = u.bbox;
        const d = u.ctx.getImageData(b.left, b.top, b.width, b.height).data;
        let tinted = 0;
        // The bands' alpha is 0.12 (about 31 of 255); the grid's is lower.
        for (let i = 0; i < d.length; i += 4) if (d[i + 3] >= 25 && d[i + 3] <= 40) tinted++;
        return tinted;
    """)
    check(shaded > 1000, f"no regime shading drawn: {shaded} tinted pixels")
    driver.save_screenshot(SCREENSHOT)
    print(f"chart: {legend!r}, line {inked[0]} of {inked[1]} plot pixels, regime shading {shaded}; screenshot {SCREENSHOT}")

    driver.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=review]").click()
    row = f"tr[data-flag-row='{target['flag_id']}']"
    wait(driver, "the held anomaly in the review queue",
         lambda d: d.find_elements(By.CSS_SELECTOR, row + " button[data-action=approve]"))
    driver.find_element(By.CSS_SELECTOR, row + " button[data-action=approve]").click()
    # The queue shows pending flags: the decided one leaves it; under "all"
    # it reads approved.
    wait(driver, "the approved flag to leave the pending queue",
         lambda d: not d.find_elements(By.CSS_SELECTOR, row))
    driver.execute_script("document.querySelector('#flag-state').value = 'all'; document.querySelector('#flag-state').dispatchEvent(new Event('change'))")
    wait(driver, "the flag to read approved",
         lambda d: d.find_elements(By.CSS_SELECTOR, row) and d.find_element(By.CSS_SELECTOR, row + " td.state").text == "approved")
    print(f"approved {target['flag_id']} in the page")
finally:
    driver.quit()

deadline = time.time() + 60
while target["ts"] not in chart_times(WRITER, target["instrument"]):
    check(time.time() < deadline, "the approved bar was never released to market.bars")
    time.sleep(0.5)
print(f"bar {target['ts']} of {target['instrument']} released")

# --- the reader: no working button -------------------------------------------
other = pending_anomalies(READER)
check(len(other) >= 1, "one anomaly still held for the reader")
driver = browser()
try:
    driver.get(URL + "/dashboard?tab=review#token=" + READER)
    wait(driver, "signed in as the reader", lambda d: "reader" in d.find_element(By.ID, "identity").text)
    wait(driver, "the held anomaly listed for the reader",
         lambda d: d.find_elements(By.CSS_SELECTOR, f"tr[data-flag-row='{other[0]['flag_id']}']"))
    buttons = driver.find_elements(By.CSS_SELECTOR, "#flags button")
    check(not buttons, f"a reader sees {len(buttons)} decision button(s)")
finally:
    driver.quit()
status, body = api(f"/api/flags/{urllib.request.quote(other[0]['flag_id'], safe='')}/approve", READER, "POST", {"reason": "no"})
check(status == 403, f"the server let a reader decide: {status} {body}")
print("reader: no buttons, and the server answers 403")
print("OK")
