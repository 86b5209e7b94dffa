"""``bench.cluster``'s fault machinery, briefly: two virtual users run the tutorial flow over https
through HAProxy in front of two production processes while SeaweedFS is killed and started again
on its ports and data folder. Uploads during the outage are refused with a 503 in Storage's shape
(never a 500), the users' retries do not hide it, uploads work again once it is back, and afterwards
every acknowledged sign-up, profile write and upload is there, with every object row's bytes in S3.

(The kill -9 of a Gatehouse process under load is tests/deploy/test_cluster.py's.)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.cluster import Phase, StopSeaweed, after_check, drive, run_timeline, server_problems
from bench.cluster_load import Recorder
from bench.cluster_setup import Cluster
from tests.deploy.components import wait_for


@dataclass
class UploadsRefused(StopSeaweed):
    """The outage lasts ``hold`` seconds and until a user has seen an upload refused after all
    its retries (not only some attempts refused, which the outage's end could then hide)."""

    recorder: Recorder = field(default_factory=Recorder)

    def start(self) -> None:
        super().start()
        wait_for(lambda: any(s.step == "avatar" and s.outcome != "ok" for s in list(self.recorder.steps)),
                 "an upload refused after its retries", timeout=60)


@dataclass
class UploadsWorkAgain:
    """No fault: the phase lasts until an upload that began after the outage has succeeded."""

    recorder: Recorder
    hold: float = 0.0
    name: str = "uploads work again"

    def start(self) -> None:
        after = time.perf_counter()
        wait_for(lambda: any(a.step == "avatar" and a.outcome == "ok" and a.started > after
                             for a in list(self.recorder.attempts)), "an upload after the outage", timeout=60)

    def stop(self) -> None:
        pass


def test_an_object_store_outage_refuses_uploads_and_loses_nothing(tmp_path: Path) -> None:
    cluster = Cluster(root=tmp_path / "cluster")
    try:
        cluster.start_backends().start_gatehouse(2)
        recorder = Recorder()
        phases = [Phase("before", 2), Phase("outage", 0, UploadsRefused(cluster, hold=3.0, recorder=recorder)),
                  Phase("after", 0, UploadsWorkAgain(recorder))]
        drive(cluster, 2, recorder, lambda: run_timeline(phases, recorder))
        check = after_check(cluster, recorder)
        problems = server_problems(cluster)
    finally:
        cluster.stop()

    failed = [a for a in recorder.attempts if a.outcome != "ok"]
    assert failed, "the outage was not seen"
    assert {(a.step, a.outcome) for a in failed} <= {("avatar", "503"), ("download", "503")}, failed
    body = json.loads(recorder.samples["avatar 503"])
    assert (body["statusCode"], body["code"]) == ("503", "StorageBackendError")
    seen = [s for s in recorder.steps if s.outcome != "ok"]
    assert seen and all(s.attempts == 3 for s in seen), "a refused upload is retried twice, then shown to the user"
    assert check["acknowledged"]["uploads"] > 0
    assert check["lost_acknowledged_writes"] == 0, check
    assert check["rows_without_bytes_count"] == 0, check
    assert not any(count for name, count in problems.items() if "status 500" in name), problems
