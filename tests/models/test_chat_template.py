"""Base models without a chat template: a clear error, or the documented plain template."""

from __future__ import annotations

import pytest

from madopd.errors import ConfigError


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from madopd.models.tiny import TinySpec, build_tiny_model

    path = tmp_path_factory.mktemp("tiny") / "m"
    build_tiny_model(path, TinySpec(hidden_size=32, num_layers=1, num_heads=1, num_kv_heads=1,
                                    head_dim=32, intermediate_size=32))
    return path


def _untemplated(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    tok.chat_template = None
    return tok


def test_missing_template_is_one_clear_error(tiny_dir):
    from madopd.models.hf import HFTeacher
    from madopd.types import Sampling

    t = HFTeacher(str(tiny_dir), _untemplated(tiny_dir))
    chat = [{"role": "user", "content": "hi"}]
    with pytest.raises(ConfigError, match="no chat template.*chat_template='plain'"):
        t.score([chat], [[1, 2]])
    with pytest.raises(ConfigError, match="no chat template"):
        t.generate([chat], Sampling(greedy=True, max_new_tokens=2))
    # pre-tokenised contexts need no template
    assert t.score([[5, 6, 7]], [[1, 2]]).dists.shape[:2] == (1, 2)


def test_plain_template_renders_roles_and_generation_prompt(tiny_dir):
    from madopd.models._common import render_prompt_ids
    from madopd.models.hf import HFTeacher

    t = HFTeacher(str(tiny_dir), _untemplated(tiny_dir), chat_template="plain")
    ids = render_prompt_ids(t.tokenizer, [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "hi"}])
    text = t.tokenizer.decode(ids)
    assert text.endswith("System: Be brief.\n\nUser: hi\n\nAssistant:")
    custom = HFTeacher(str(tiny_dir), _untemplated(tiny_dir),
                       chat_template="{% for m in messages %}<{{ m['content'] }}>{% endfor %}")
    assert custom.tokenizer.decode(render_prompt_ids(custom.tokenizer, [
        {"role": "user", "content": "x"}])) == "<x>"
    with pytest.raises(ConfigError, match="chat_template"):
        HFTeacher(str(tiny_dir), chat_template="  ")
