"""``/docs``: Swagger UI from the package, under the dashboard's CSP, rendering with no other host
reachable; ``api_docs: false`` turns it off. See docs/configuration.md ("API keys")."""

from __future__ import annotations

from pathlib import Path

import httpx
from servers import running_service, write_config
from test_ui import BROWSER_FLAGS, chromium


def test_the_api_docs_render_offline_from_the_service_alone(tmp_path: Path) -> None:
    """Every request the page makes goes to the service (any other is aborted, as on a machine
    without internet), the page names the API and its operations, and nothing broke the CSP.
    FastAPI's page loaded its script and style from a CDN and rendered blank offline."""
    from playwright.sync_api import expect, sync_playwright

    executable = chromium()
    config = write_config(tmp_path / "pq.yml", f"sqlite:///{tmp_path / 'q.sqlite3'}", "q")
    with running_service(config, tmp_path / "service.log") as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=BROWSER_FLAGS)
        page = browser.new_page()
        elsewhere: list[str] = []
        errors: list[str] = []

        def only_the_service(route: object) -> None:
            url = route.request.url  # type: ignore[attr-defined]
            if url.startswith(base + "/"):
                route.continue_()  # type: ignore[attr-defined]
            else:
                elsewhere.append(url)
                route.abort()  # type: ignore[attr-defined]

        page.route("**/*", only_the_service)
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(base + "/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("PerfectQueue")
        expect(page.locator('.opblock-summary-path[data-path="/v1/queues/{queue}/submit"]')).to_be_visible()
        browser.close()
    assert elsewhere == []
    assert errors == []


def test_the_docs_are_served_under_a_csp_and_can_be_turned_off(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.sqlite3'}"
    with running_service(write_config(tmp_path / "on.yml", url, "q"), tmp_path / "on.log") as base:
        page = httpx.get(base + "/docs")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "cdn" not in page.text.lower() and "https://" not in page.text
        script = httpx.get(base + "/docs/swagger-ui-bundle.js")
        assert script.status_code == 200 and len(script.content) > 100_000
        assert httpx.get(base + "/redoc").status_code == 404
    with running_service(
        write_config(tmp_path / "off.yml", url, "q", api_docs=False), tmp_path / "off.log"
    ) as base:
        assert httpx.get(base + "/docs").status_code == 404
        assert httpx.get(base + "/docs/swagger-ui-bundle.js").status_code == 404
        assert httpx.get(base + "/openapi.json").status_code == 200
