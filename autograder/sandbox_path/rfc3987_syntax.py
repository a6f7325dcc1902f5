"""Stands in for the ``rfc3987-syntax`` package inside the grading sandbox (first on its ``PYTHONPATH``).

``jsonschema`` imports that package, when installed, for its optional IRI format checks; importing
it builds dozens of ``lark`` grammars, which took 2-6 s of CPU in each process that imports
``nbformat`` (the sandbox's notebook client, and the kernel as soon as a plotly figure is shown):
up to a third of the cost of grading a small notebook. Nothing the grader runs checks IRIs, and
``jsonschema`` skips those checks when this import fails.
"""

raise ImportError("rfc3987-syntax is not used in the grading sandbox (IRI format checks are skipped)")
