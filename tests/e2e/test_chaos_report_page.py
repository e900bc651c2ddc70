"""The evidence bundle's report.html as a person sees it: Debian chromium (``/usr/bin/chromium``) driven by
Playwright opens the file with the network off, and finds the verdict, both plots with the fault windows
labelled, the lost and unknown webhooks and a counterexample. The screenshot stays under test-output/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fincart_chaos.bundle import write_bundle

from tests.e2e.test_live_page import CHROMIUM, CHROMIUM_ARGS
from tests.support.chaos_histories import failing_run

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian chromium at /usr/bin/chromium (apt-get install -y chromium); CI installs it",
    ),
]
WAIT_MS = 30_000


def test_the_report_page_shows_the_verdict_plots_and_fault_labels(tmp_path: Path, output_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    report, lost = failing_run()
    write_bundle(tmp_path, [report])
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1150, "height": 900})
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto((tmp_path / "report.html").resolve().as_uri())
            page.wait_for_selector("#plot-throughput svg", timeout=WAIT_MS)
            assert page.inner_text(".verdict") == "Fail"
            for plot in ("#plot-throughput", "#plot-outcomes"):
                box = page.locator(f"{plot} svg").bounding_box()
                assert box is not None and box["width"] > 400 and box["height"] > 150  # drawn, not empty
            # the fault window is labelled on both plots, as text a reader (and a search) finds
            assert page.locator("#plot-throughput svg text", has_text="kill-processor (podKill)").count() == 1
            assert page.locator("#plot-outcomes svg text", has_text="kill-processor (podKill)").count() == 1
            legend = [t.strip() for t in page.locator("#plot-outcomes svg text").all_text_contents()]
            assert "lost (1)" in legend and "unknown (1)" in legend
            assert page.locator("h2", has_text="Counterexamples").count() == 1
            assert page.locator("td code", has_text=lost).count() >= 1
            lost_cell = page.locator("td span.lost").first
            assert lost_cell.evaluate("e => getComputedStyle(e).color") == "rgb(214, 40, 40)"  # stands out
            page.screenshot(path=str(output_dir / "report.png"), full_page=True)
        finally:
            browser.close()
    assert all(url.startswith("file://") for url in requests), requests  # nothing from the network
