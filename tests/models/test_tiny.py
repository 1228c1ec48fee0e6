from transformers import AutoModelForCausalLM, AutoTokenizer

from madopd.models.tiny import EOS, build_tokenizer, count_parameters


def test_tokenizer_round_trips_any_utf8_text():
    tok = build_tokenizer()
    text = "Q:12+34= héllo 🙂 <<CONFIDENCE=90>> \n\ttabs"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    # merged boilerplate is one token, not 13 bytes
    assert len(tok("<<CONFIDENCE=", add_special_tokens=False)["input_ids"]) == 1


def test_chat_template_and_eos():
    tok = build_tokenizer()
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    text = tok.apply_chat_template(chat, tokenize=False)
    assert text == "<|user|>hi<|end|><|assistant|>yo<|end|>"
    assert tok.eos_token == EOS
    prompt = tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>")


def test_checkpoint_loads_with_from_pretrained(tiny_dirs):
    path = tiny_dirs["student"]
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.vocab_size == len(tok)
    assert model.config.head_dim >= 32  # vLLM's minimum
    assert 10_000 < count_parameters(model) < 1_000_000
