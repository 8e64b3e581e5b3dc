"""`runlane up` pools the samples of its web and worker processes: one scrape sees a run whole."""
from __future__ import annotations

from tests.integration.test_metrics import scrape, value
from tests.support import User


def test_the_web_metrics_of_runlane_up_include_what_its_worker_measured(deployment):
    erin = User("erin", deployment.token("erin"), deployment.base_url)
    run_id = erin.submit("t1", "demo", {"steps": 2, "delay_ms": 1})["run_id"]
    assert erin.wait_for_state(run_id, {"completed"}, timeout=60)["status"] == "completed"

    samples = scrape(deployment.base_url)
    assert value(samples, "runlane_runs_total", status="queued", agent="demo") == 1  # web
    assert value(samples, "runlane_runs_total", status="completed", agent="demo") == 1  # worker
    assert value(samples, "runlane_run_duration_seconds_count",
                 agent="demo", status="completed") == 1
    assert value(samples, "runlane_factory_build_seconds_count", factory="engine") == 1
    assert (deployment.workdir / "instance" / "metrics").is_dir()
