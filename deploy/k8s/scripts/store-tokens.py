"""Store the first administrators' tokens in a Kubernetes Secret instead of a log.

`registry access init` prints each founding principal's token once. The
registry-access-init Job (access-init-job.yaml) pipes that output here; this writes
the tokens into the Secret registry-admin-tokens (one key per principal, "mee.admin")
through the Kubernetes API, with the Job's own short-lived service-account token, and
prints only the principals' names. The operator reads them from the Secret, copies
them into the secret store, and deletes the Secret (docs/operations.md, "First
administrators").

    store-tokens.py --check   fail early (before `registry access init` runs) when the
                              API cannot be reached or the Job may not write the Secret
    store-tokens.py < output  store the tokens read on standard input

Standard library only (it runs in the registry image). KUBERNETES_API and
SERVICEACCOUNT_DIR override where the API and the credentials are (tests).
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

SECRET = "registry-admin-tokens"
TOKEN_LINE = re.compile(r"^(\S+) \((\w+)\): token \(shown once\):\n(\S+)$", re.MULTILINE)


def api() -> tuple[str, dict[str, str], ssl.SSLContext | None, str]:
    account = Path(os.environ.get("SERVICEACCOUNT_DIR", "/var/run/secrets/registry-api"))
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    base = os.environ.get("KUBERNETES_API") or f"https://{host}:{port}"
    token = (account / "token").read_text().strip()
    namespace = (account / "namespace").read_text().strip()
    context = None
    if base.startswith("https:"):
        context = ssl.create_default_context(cafile=str(account / "ca.crt"))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return f"{base}/api/v1/namespaces/{namespace}/secrets", headers, context, namespace


def request(method: str, url: str, body: object | None = None) -> int:
    _, headers, context, _ = api()
    data = None if body is None else json.dumps(body).encode()
    call = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(call, timeout=30, context=context) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def check() -> int:
    """The Secret is readable (200) or absent (404): anything else would lose the
    tokens after the registry has made them."""
    secrets, _, _, _ = api()
    status = request("GET", f"{secrets}/{SECRET}")
    if status not in (200, 404):
        print(f"store-tokens: cannot read Secret {SECRET} (HTTP {status})", file=sys.stderr)
        return 1
    return 0


def store(text: str) -> int:
    found = TOKEN_LINE.findall(text)
    if not found:
        print("store-tokens: no token in the output", file=sys.stderr)
        return 1
    secrets, _, _, namespace = api()
    data = {
        principal.replace("/", "."): base64.b64encode(token.encode()).decode()
        for principal, _, token in found
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": SECRET,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "carbon-registry"},
        },
        "data": data,
    }
    status = request("POST", secrets, secret)
    if status == 409:  # left from an earlier registry on this namespace: replace it
        status = request("PUT", f"{secrets}/{SECRET}", secret)
    if status not in (200, 201):
        print(f"store-tokens: cannot write Secret {SECRET} (HTTP {status})", file=sys.stderr)
        return 1
    tokens = {token for _, _, token in found}
    for line in TOKEN_LINE.sub("", text).splitlines():
        if line.strip() and line.strip() not in tokens:
            print(line)  # what else `registry access init` said (warnings)
    for principal, role, _ in found:
        key = principal.replace("/", ".")
        print(f"{principal} ({role}): token stored in Secret {SECRET}, key {key}")
    return 0


if __name__ == "__main__":
    sys.exit(check() if sys.argv[1:] == ["--check"] else store(sys.stdin.read()))
