"""Weak-to-strong methods beyond a loss, one module each (losses are registered in
w2sray/losses.py). A method's module owns its spec field and its validation, what it adds to a
run (and so to the run key, with its version), and its phase in the worker loop:

- generative.py: generative fine-tuning (the student's LM objective on split B's texts first).

Still spread over spec.py, runs.py and sweep.py: bootstrapping chains and searches (their
registry entries are the next step).
"""
