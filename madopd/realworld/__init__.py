"""The real world: real pretrained SmolLM2 models, the real-calls task, its zoo and ``madopd demo --world real``.

Everything real-model-specific lives here — the task (``calls``), the demo (``world``) and its
table (``table``), the committed transcripts (``data/``). The core (``madopd.distill``,
``debate``, ``models``, ``widgets`` ...) never imports this package; it is reached only through
thin entry points: ``madopd demo --world real`` (``commands/demo.py``), the task registry's lazy
``"module:attribute"`` string (``real-calls``), the benchmarks and the notebooks.
"""
