"""LiteLLM's side of the comparison: one JSON line per finished request, written by a
LiteLLM callback, as the nearest thing to the gateway's evidence record that LiteLLM
offers without a database (its spend logs need PostgreSQL). Unsigned, and appended to the
file named by MERCATOR_BENCH_REQUEST_LOG. `bench/loadtest.py --peers` loads it.
"""

import json
import os
import time

from litellm.integrations.custom_logger import CustomLogger


class RequestLog(CustomLogger):
    def __init__(self):
        super().__init__()
        self.file = open(os.environ["MERCATOR_BENCH_REQUEST_LOG"], "a", buffering=1)

    def _write(self, kwargs, response_obj, start_time, end_time, outcome):
        usage = getattr(response_obj, "usage", None)
        line = {
            "time": time.time(),
            "outcome": outcome,
            "model": kwargs.get("model"),
            "call_id": kwargs.get("litellm_call_id"),
            "duration_s": (end_time - start_time).total_seconds(),
            "total_tokens": getattr(usage, "total_tokens", None),
        }
        self.file.write(json.dumps(line) + "\n")

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._write(kwargs, response_obj, start_time, end_time, "success")

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._write(kwargs, response_obj, start_time, end_time, "failure")


request_logger = RequestLog()
