"""At interpreter exit, the per-URL Redis limits close their connections (a ``redis://`` URL
given as ``limits=`` is one shared :class:`~allm.middleware.RedisLimits` per process)."""

from __future__ import annotations

import subprocess
import sys

from .conftest import child_env

CHILD = """
import atexit, sys
import redis
from allm import middleware as mw
from allm.middleware._builtins import _limits

url = sys.argv[1]
limits = _limits(url)
assert limits is _limits(url)  # one per URL
mw.RateLimit(5, 60, limits=url)
limits.hit("k", 5, 60.0)  # connects
probe = redis.Redis.from_url(url)
before = len(probe.client_list())
atexit._run_exitfuncs()
after = len(probe.client_list())
probe.close()
print(before, after, limits._client is None)
"""


def test_the_shared_redis_limits_close_at_exit(redis_url: str) -> None:
    proc = subprocess.run([sys.executable, "-X", "dev", "-c", CHILD, redis_url], env=child_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    before, after, closed = proc.stdout.split()
    assert int(after) == int(before) - 1 and closed == "True"
    assert "ResourceWarning" not in proc.stderr
