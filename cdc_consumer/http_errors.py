"""Why a request to an HTTP edge (Kafka Connect REST, schema registry) failed, in one line a user can act on:
the socket-level reason, or which TLS setting to change, rather than urllib3's long repr."""

from __future__ import annotations

import re

import requests


def request_failure(exc: requests.RequestException, ca_variable: str) -> str:
    """The reason of `exc`; `ca_variable` names the setting that trusts the server's CA."""
    if isinstance(exc, requests.exceptions.SSLError):
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            detail = re.search(r"certificate verify failed: ([^(\'\")]+)", text)
            return "TLS: server certificate not trusted" + (f" ({detail.group(1).strip()})" if detail else "") \
                + f" — set {ca_variable} to the CA that signed it"
        if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
            return "TLS handshake failed: the port does not speak TLS (use http://)"
        return "TLS handshake failed: " + text[:200]
    if isinstance(exc, requests.exceptions.ConnectionError) and \
            re.search(r"RemoteDisconnected|Connection aborted|reset by peer", str(exc)):
        return "connection closed without an answer (does the port require https://?)"
    if isinstance(exc, requests.Timeout):
        return "no answer before the timeout"
    errno = re.search(r"\[Errno -?\d+\] [^'\")]+", str(exc))
    return errno.group(0).strip() if errno else f"{type(exc).__name__}: {str(exc)[:200]}"
