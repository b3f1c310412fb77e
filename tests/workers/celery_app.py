"""The Celery app of the queue tests: ``celery -A tests.workers.celery_app worker --pool=solo``."""

from __future__ import annotations

from celery import Celery

from allm.workers.celery import register
from tests.workers.apps import URL, build_worker

VISIBILITY_TIMEOUT = 10



def make_app(url: str) -> Celery:
    app = Celery("allm_workers_test", broker=url, backend=url)
    app.conf.update(
        # A message a dead worker took comes back after the visibility timeout; the sweep that
        # brings it back runs every second here (kombu's default is 10 x 10 s). A worker killed
        # during a sweep leaves the sweep's lock behind until unacked_mutex_expire (300 s by default).
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT, "unacked_restore_interval": 1, "unacked_restore_throttle": 1,
            "unacked_mutex_expire": 5,
        },
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
    )
    return app


app = make_app(URL)
run_session = register(app, build_worker)
