"""The course's autograder: nbgrader exercises, hidden-test checks and the grading command.

    python -m autograder release                      # solutions/*.md -> .ipynb -> exercises/
    python -m autograder grade SUBMISSIONS_DIR --assignment NAME --out OUT_DIR
    python -m autograder bench                        # time to grade one submission

``autograder.checks`` (called by the hidden tests; its diagnosis of known mistakes is ``patchlab.check``) needs only torch and
patchlab; the rest needs nbgrader (``pip install -e .[grading]``).
"""
