"""A `Service` in a process of its own, stopped while one job of a given kind runs (used by
tests/test_serve.py, which kills this process if it does not end: a hang fails, never hangs).

    python tests/service_child.py KIND FOLDER

It starts the service of the working directory's settings, runs a job of KIND (profiles, ingest,
retrain: slowed down, the real work following; send: as it is, against a slow SMTP server;
ingest-url: the configured source "slow source", a real URL), writes FOLDER/running once a slowed
job is under way, waits for FOLDER/stop, calls `Service.stop()` and prints how long that took.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from digest import service as service_module
from digest.models import utcnow
from digest.settings import Settings


def main() -> None:
    kind, folder = sys.argv[1], Path(sys.argv[2])
    service = service_module.Service(Settings.from_env())
    service.start()
    slowed = {"profiles": "sync_profiles", "ingest": "ingest_source", "retrain": "retrain"}.get(kind)
    if slowed:
        real = getattr(service_module, slowed)

        def slow(*args, **kwargs):
            (folder / "running").touch()
            time.sleep(1.5)  # the stop comes now, while this job is running
            return real(*args, **kwargs)

        setattr(service_module, slowed, slow)
    job = {"ingest": ("ingest", "sample feed"), "ingest-url": ("ingest", "slow source")}.get(kind, (kind,))
    service.scheduler.add_job(service_module.run_job, "date", args=job, id=f"now-{kind}", run_date=utcnow())
    while not (folder / "stop").exists():
        time.sleep(0.05)
    began = time.monotonic()
    service.stop()
    print(f"stopped in {time.monotonic() - began:.1f} s", flush=True)


if __name__ == "__main__":
    main()
