"""Real teacher and student logits for ``bench_divergence.py --real`` (issue 10 item 6).

Teacher: SmolLM2-135M-Instruct from madopd's model catalogue (4-bit GGUF weights de-quantized
to fp32: real pretrained weights with quantization noise). Student: its family student
``shrink_layers`` (every other decoder layer, embeddings and head copied; same tokenizer,
V = 49,152). K teachers are the teacher under K personas (system prompts), as the real
world's debating teachers are: the persona is a prefix, and only the positions of the shared
conversation (user turn + assistant answer, identical token ids for every persona and the
student) are kept, so row i of every tensor predicts the same token.

One no-grad forward per model and conversation, made once per process; the rows are the
logits [N, V] float32 of all conversations concatenated (N <= the tokens asked for: real
rows only, never repeated).
"""

from __future__ import annotations

import tempfile
import time

import torch

TEACHER = "smollm2-135m-instruct"
PERSONAS = (
    "You are a careful senior software engineer. Answer precisely and briefly.",
    "You are a patient teacher who explains every step to a beginner.",
    "You are a sceptical reviewer who points out what could go wrong.",
)
STUDENT_SYSTEM = "You are a helpful AI assistant."
CONVERSATIONS = (
    ("Write a Python function that returns the n-th Fibonacci number.",
     "Here is an iterative version that runs in linear time and constant memory:\n\n"
     "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
     "    return a\n\nFor n = 10 it returns 55. A recursive version is shorter but takes "
     "exponential time unless you cache the results."),
    ("What is the difference between a list and a tuple in Python?",
     "A list is mutable: you can append, remove and change its items after creating it. A "
     "tuple is immutable, so it can be used as a dictionary key and is slightly faster to "
     "create. Use a list for a collection that changes and a tuple for a fixed record such "
     "as a point (x, y)."),
    ("Explain what a hash table is in two or three sentences.",
     "A hash table stores key-value pairs in an array and uses a hash function to turn each "
     "key into an index, so lookups, inserts and deletes take constant time on average. When "
     "two keys land on the same index, the table resolves the collision, for example by "
     "chaining the entries in a small list or by probing the next free slot."),
    ("How do I read a CSV file with pandas and keep only the rows where price > 100?",
     "import pandas as pd\n\ndf = pd.read_csv(\"items.csv\")\nexpensive = df[df[\"price\"] > "
     "100]\nprint(expensive.head())\n\nThe comparison builds a boolean column and indexing "
     "with it keeps the matching rows. Make sure the price column is numeric; otherwise "
     "convert it first with pd.to_numeric."),
    ("Why does my recursive function raise RecursionError for large inputs?",
     "Python limits the depth of the call stack, by default to about 1000 frames, so a "
     "function that calls itself once per element fails on long inputs. Rewrite it as a loop, "
     "or process the data in chunks. Raising the limit with sys.setrecursionlimit only moves "
     "the problem and can crash the interpreter."),
    ("Give me a SQL query that counts orders per customer.",
     "SELECT customer_id, COUNT(*) AS n_orders\nFROM orders\nGROUP BY customer_id\nORDER BY "
     "n_orders DESC;\n\nGROUP BY makes one group per customer and COUNT(*) counts the rows in "
     "each group. Add a HAVING clause, such as HAVING COUNT(*) > 5, to keep only frequent "
     "customers."),
    ("What does the git command rebase do?",
     "git rebase moves your commits so that they start from a new base commit, replaying "
     "them one by one. The history becomes linear, which is easier to read than a merge "
     "commit, but the commits get new hashes, so never rebase commits that other people "
     "have already pulled."),
    ("Summarise the idea of gradient descent.",
     "Gradient descent minimises a function by repeatedly taking a small step against its "
     "gradient, the direction of steepest increase. The step size, called the learning rate, "
     "trades speed for stability: too large and the iterates overshoot and diverge, too "
     "small and training takes forever. Stochastic gradient descent estimates the gradient "
     "from a small batch of examples at each step."),
)


def cached() -> bool:
    """Whether the teacher is pulled (converted and checksummed) in the model cache."""
    from madopd.models.catalogue import CHECKSUMS, folder_of

    return (folder_of(TEACHER) / CHECKSUMS).is_file()


def _ids(tok, system: str, user: str, answer: str):
    """(prefix ids, conversation ids): the conversation's ids do not depend on the system."""
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": user},
            {"role": "assistant", "content": answer}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    head = tok.apply_chat_template(msgs[:1], tokenize=False)
    if not text.startswith(head):
        raise RuntimeError("the chat template does not render the system turn first")
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    return enc(head), enc(text[len(head):])


@torch.no_grad()
def _rows(model, prefix, conv) -> torch.Tensor:
    """Logits [len(conv), V] at the positions that predict each conversation token."""
    ids = torch.tensor([prefix + conv])
    logits = model(input_ids=ids).logits[0].float()
    return logits[len(prefix) - 1:len(prefix) - 1 + len(conv)]


def load(n_tokens: int, n_teachers: int, log=print):
    """(student logits [N, V], [K teacher logits [N, V]], note) from real forwards."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from madopd.models.catalogue import resolve_model_path
    from madopd.models.family import shrink_layers

    if n_teachers > len(PERSONAS):
        raise ValueError(f"--real has {len(PERSONAS)} teacher personas, {n_teachers} asked")
    hf_logging.disable_progress_bar()  # weight-loading bars would bury the table
    t0 = time.perf_counter()
    path = resolve_model_path(TEACHER)
    tok = AutoTokenizer.from_pretrained(path)
    teacher = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with tempfile.TemporaryDirectory(prefix="madopd-bench-student-") as d:
        student = AutoModelForCausalLM.from_pretrained(
            shrink_layers(path, d), dtype=torch.float32).eval()
    n_layers = (teacher.config.num_hidden_layers, student.config.num_hidden_layers)
    z, ts, total, n_conv = [], [[] for _ in range(n_teachers)], 0, 0
    for user, answer in CONVERSATIONS:
        if total >= n_tokens:
            break
        pre, conv = _ids(tok, STUDENT_SYSTEM, user, answer)
        conv = conv[:n_tokens - total]
        z.append(_rows(student, pre, conv))
        for k in range(n_teachers):
            pre_k, conv_k = _ids(tok, PERSONAS[k], user, answer)
            if conv_k[:len(conv)] != conv:
                raise RuntimeError("the conversation tokenises differently under a persona")
            ts[k].append(_rows(teacher, pre_k, conv))
        total += len(conv)
        n_conv += 1
    z = torch.cat(z)
    note = (f"real logits: {TEACHER} ({n_layers[0]} layers) x {n_teachers} personas as teachers, "
            f"shrink_layers student ({n_layers[1]} layers), {z.shape[0]} tokens of "
            f"{n_conv} conversations, V = {z.shape[1]}, made in "
            f"{time.perf_counter() - t0:.0f} s (4-bit GGUF weights de-quantized to fp32)")
    if z.shape[0] < n_tokens:
        note += f"; {n_tokens} tokens asked, the conversations have {z.shape[0]}"
    return z.contiguous(), [torch.cat(t).contiguous() for t in ts], note
