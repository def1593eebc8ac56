"""Weak-to-strong methods beyond a loss, one module each (losses are registered in
w2sray/losses.py). A method's module owns its spec field and its validation, what it adds to a
run (and so to the run key, with its version), and its phase in the worker loop:

- bootstrap.py: which ladder paths a method trains (pairs, bootstrapping chains);
- generative.py: generative fine-tuning (the student's LM objective on split B's texts first),
  and the report's comparison of a variant with and without it;
- search.py: Optuna searches' spec section, checks and plan entry; search_tune.py: the Tune
  searcher that multiplexes the searches' trials (the stage that runs them and a trial's task
  still live by role in sweep.py and train/tasks.py).
"""
