"""The course's developer tools, not in the learner's wheel: ``bench`` (``python -m patchlab bench``),
``rounds`` (interleaved timing, also for ``python -m autograder bench``) and ``train`` (``python -m
patchlab_dev.train`` trains the course model ``ioi-mini`` again). They run from the repository."""
