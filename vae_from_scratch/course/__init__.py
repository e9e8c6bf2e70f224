"""The course's tooling, beside the model: what runs the course rather than what it teaches.

* :mod:`.cli` -- the ``vae-course`` command; :mod:`.flags` -- its flags, made from the
  configuration's declarations; :mod:`.train_command` -- ``vae-course train``, a run in
  progress as one object;
* :mod:`.run` -- a run's output folder; :mod:`.checkpoint` -- the safetensors checkpoints
  both backends read and write; :mod:`.files` -- atomic writes;
* :mod:`.lessons` -- ``lessons/`` generated from ``solutions/``; :mod:`.start` -- the
  learner's own copy;
* :mod:`.compare` -- ``vae-course compare``; :mod:`.download` -- full MNIST;
* :mod:`.threads` -- how many threads the libraries use (the notebooks' first cell).

It imports the model and the PyTorch mirror, never the other way round.
"""
