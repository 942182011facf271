"""What Replay tells posthog-js before it records: remote config, flags and decide answers. Pure.

posthog-js asks for its configuration in one of three ways depending on its version
(docs/posthog-wire.md, "Remote config: which request, by version"): ``GET /array/{token}/config(.js)``
(>= 1.350), ``POST /flags/?v=2&config=true`` (~1.252 - 1.349) or ``POST /decide/`` (<= ~1.251). All
three carry the same keys here, built once by ``remote_config``.

What the config says, and why:

* ``sessionRecording`` is an object: that alone turns recording on. ``endpoint`` is ``/s/``.
  ``masking`` carries the project's policy so the browser masks before anything leaves it
  (client options in ``posthog.init`` win over it, so the server enforces the policy again).
* ``supportedCompression: ["gzip-js", "base64"]``: gzip bodies, base64 forms where gzip fails.
* Everything Replay does not serve is off (autocapture, heatmaps, surveys, site apps, dead clicks,
  exception and log capture, feature flags), so the SDK calls no endpoint we do not have.
"""

from __future__ import annotations

import json
from typing import Any

RECORDINGS_ENDPOINT = "/s/"
SUPPORTED_COMPRESSION = ("gzip-js", "base64")
# What posthog-js masks when the project has no policy of its own: every input, nothing else.
DEFAULT_MASKING: dict[str, Any] = {"maskAllInputs": True, "maskTextSelector": None, "blockSelector": None}


def remote_config(token: str, masking: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``RemoteConfig`` object posthog-js reads (``packages/browser-common/src/types/remote-config.ts``)."""
    return {
        "token": token,
        "supportedCompression": list(SUPPORTED_COMPRESSION),
        # >= 1.350: skip the /flags/ call altogether; Replay has no feature flags.
        "hasFeatureFlags": False,
        "sessionRecording": {
            "endpoint": RECORDINGS_ENDPOINT,
            # Console logs are shown in the player; the server's PII detectors scan them like any text.
            "consoleLogRecordingEnabled": True,
            # Versions before ~1.12x pick recorder-v2.js (rrweb 2) only when told so.
            "recorderVersion": "v2",
            "sampleRate": None,
            "minimumDurationMilliseconds": None,
            "linkedFlag": None,
            "networkPayloadCapture": None,
            "masking": dict(masking if masking is not None else DEFAULT_MASKING),
            "urlTriggers": [],
            "urlBlocklist": [],
            "eventTriggers": [],
            "scriptConfig": None,
        },
        "capturePerformance": False,
        "autocapture_opt_out": True,
        "autocaptureExceptions": False,
        "captureDeadClicks": False,
        "errorTracking": {"autocaptureExceptions": False, "suppressionRules": []},
        "logs": {"captureConsoleLogs": False},
        "heatmaps": False,
        "surveys": False,
        "productTours": False,
        "siteApps": [],
        "toolbarParams": {},
        "editorParams": {},
        "isAuthenticated": False,
        "elementsChainAsString": True,
        # posthog-js < ~1.100 turned autocapture on from this key of the /decide/ answer.
        "config": {"enable_collect_everything": False},
    }


def config_script(token: str, config: dict[str, Any]) -> str:
    """``/array/{token}/config.js``: defines ``window._POSTHOG_REMOTE_CONFIG[token]`` (``remote-config.ts``)."""
    # json.dumps escapes quotes and backslashes; "</" and U+2028/9 are escaped too so the text is
    # safe inside any script context (the token is the project's, but never trust text in code).
    def js(value: Any) -> str:
        return (json.dumps(value, separators=(",", ":"))
                .replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))

    return ("(function(){window._POSTHOG_REMOTE_CONFIG=window._POSTHOG_REMOTE_CONFIG||{};"
            f"window._POSTHOG_REMOTE_CONFIG[{js(token)}]={{config:{js(config)},siteApps:[]}};}})();\n")


def flags_response(config: dict[str, Any], *, with_config: bool, request_id: str) -> dict[str, Any]:
    """``POST /flags/?v=2``: no flags; with ``config=true`` (~1.252 - 1.349) the config keys as well."""
    answer: dict[str, Any] = dict(config) if with_config else {}
    answer.update({"flags": {}, "errorsWhileComputingFlags": False, "requestId": request_id})
    return answer


def decide_response(config: dict[str, Any]) -> dict[str, Any]:
    """``POST /decide/?v=3|4``: the config keys at top level plus empty flags in both shapes (v3 and v4)."""
    answer = dict(config)
    answer.update({"featureFlags": {}, "featureFlagPayloads": {}, "flags": {}, "errorsWhileComputingFlags": False})
    return answer
