"""Teacher and student backends (docs/architecture.md §3 Models).

- ``HFTeacher`` / ``HFStudent`` (+ ``LoraSpec``): transformers models in this process.
- ``VLLMServerTeacher``: an OpenAI-compatible vLLM server (chat completions + prompt_logprobs).
- ``VLLMOfflineTeacher``: vLLM's in-process ``LLM`` engine (needs the ``vllm`` extra).
- ``check_same_vocab``: student and teachers must share one tokenizer.
- ``madopd.models.tiny``: tiny Qwen3 checkpoints built locally for tests and the toy world.
- ``madopd.models.catalogue``: real checkpoints that install offline (``madopd models pull``);
  catalogue names work wherever a model path does.
- ``madopd.models.family``: students derived from a real teacher (same tokenizer).
"""

from madopd.models.hf import HFStudent, HFTeacher, LoraSpec, check_same_vocab
from madopd.models.vllm_offline import VLLMOfflineTeacher
from madopd.models.vllm_server import VLLMServerTeacher

__all__ = ["HFStudent", "HFTeacher", "LoraSpec", "VLLMOfflineTeacher", "VLLMServerTeacher",
           "check_same_vocab"]
