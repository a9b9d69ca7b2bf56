"""`python -m streams.healthcheck [URL]`: exit 0 when URL answers 2xx within the timeout.

URL defaults to `TIDINGS_HEALTHCHECK_URL`, so one image HEALTHCHECK serves the worker and the
API (each container sets the variable to its own port).

The container image's HEALTHCHECK and the Kubernetes exec probes of the worker use it: the
slim image has no curl, and the worker's web server listens on loopback unless
TIDINGS_WEB_HOST opens it (an exec probe runs inside the pod, so loopback is enough).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def check(url: str, timeout_s: float = 3.0) -> int:
    if not url.startswith(("http://", "https://")):
        print(f"not an http(s) URL: {url}", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - checked
            return 0 if 200 <= response.status < 300 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TIDINGS_HEALTHCHECK_URL")
    if len(sys.argv) > 2 or not target:
        print("usage: python -m streams.healthcheck URL (or set TIDINGS_HEALTHCHECK_URL)",
              file=sys.stderr)
        sys.exit(2)
    sys.exit(check(target))
