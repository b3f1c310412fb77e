"""The arq settings of the queue tests: ``arq tests.workers.arq_app.WorkerSettings``."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from arq.connections import RedisSettings

from allm.workers.arq import function
from tests.workers.apps import URL, build_worker

MAX_JOBS = 4
# seconds; a dead worker's job runs again after JOB_TIMEOUT + 10 (the live test allows more)
JOB_TIMEOUT = int(os.environ.get("ALLM_TEST_JOB_TIMEOUT", "5"))


class WorkerSettings:
    functions: ClassVar[list[Any]] = [function(build_worker)]
    redis_settings = RedisSettings.from_dsn(URL)
    max_jobs = MAX_JOBS
    job_timeout = JOB_TIMEOUT
    poll_delay = 0.05
    keep_result = 3600
