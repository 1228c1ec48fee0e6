"""The rollout-server client against replies with ids out of range or log-probs > 0 (issue 23,
item 6): one RolloutError, counted, never a tensor sized by a hostile id."""

from __future__ import annotations

import pytest

from madopd.errors import RolloutError
from madopd.types import Sampling, State

pytest.importorskip("safetensors")


@pytest.mark.parametrize("ids,lps,match", [
    ([5, 2_000_000_000], [-0.1, -0.2], "token id 2000000000 outside"),
    ([5, -1], [-0.1, -0.2], "token id -1 outside"),
    ([5, 6], [-0.1, 445.0], "log-prob 445.0 is not <= 0"),
    ([5, 6], [-0.1, float("nan")], "log-prob nan is not <= 0"),
])
def test_rollout_replies_out_of_range_are_rollout_errors(tiny_dirs, tmp_path, ids, lps, match):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
    from test_vllm_rollout_server_unit import Fake

    from madopd.models.hf import HFStudent
    from madopd.models.vllm_rollout_server import VLLMServerRollout

    def handle(path, body):
        return 200, {"choices": [{"index": 0, "text": "", "token_ids": ids,
                                  "logprobs": {"token_logprobs": lps}}]}

    server = Fake(handle)
    try:
        st = HFStudent(tiny_dirs["student"], max_context=40)
        eng = VLLMServerRollout(st, server.url, weights_dir=tmp_path / "w", retries=0)
        with pytest.raises(RolloutError, match=match):
            eng.rollout([State("s", [{"role": "user", "content": "q"}])],
                        Sampling(max_new_tokens=2, seed=0))
        assert eng.counters["malformed_replies"] == 1
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
