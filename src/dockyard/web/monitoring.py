"""The console's monitoring data: the API's metrics view for the signed-in user,
with the advisor's findings in the page's language. The charts themselves are drawn in
the browser (web/static/monitoring.js) as inline SVG."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from dockyard.services.metrics import instance_metrics
from dockyard.web.pages import Page, page

router = APIRouter(include_in_schema=False)


@router.get("/console/instances/{key}/metrics")
def metrics(key: str, p: Page = Depends(page)) -> JSONResponse:
    # Anyone else's instance: NotFound, a JSON 404 (the app's DockyardError handler).
    view = instance_metrics(p.platform, p.request.app.state.metrics.store, p.user, key)
    for finding in view["findings"]:
        finding["message"] = p.t(f"advisor.{finding['rule']}").format(**finding["params"])
        finding["action"] = p.t(f"advisor.{finding['rule']}.action").format(**finding["params"])
    return JSONResponse(view, headers={"Cache-Control": "no-store"})
