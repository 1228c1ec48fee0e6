"""The toy world: two synthetic tasks, a trained zoo of tiny teachers, and ``madopd demo``.

Everything toy lives here — the tasks (``toy_tools``, ``toy_code``, ``toy_common``), the zoo
that trains and caches their teachers and student (``zoo``, ``zoo_data``, ``zoo_train``,
``zoo_eval``), and the demo with its report. The core (``madopd.distill``, ``debate``,
``divergence``, ``models``, ``widgets`` ...) never imports this package; it is reached only
through thin entry points: the CLI commands (``madopd demo``, ``madopd zoo``), the task and
benchmark registries' lazy ``"module:attribute"`` strings, and the notebooks.
"""
