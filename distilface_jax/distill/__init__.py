"""Distillation: a small student taught to reproduce a frozen teacher's sentence embeddings.

student.py       the student: a layer subset of the teacher, or any supported HF encoder
teacher.py       the frozen teacher and its own pooling/normalisation; cached corpus embeddings
objective.py     MSE (+ optional contrastive term, + a queue's negatives) between the embeddings
relations.py     relational (in-batch similarity), hidden-state and attention-relation terms
queue.py         past batches' teacher embeddings handed over with each batch (no training state)
step.py          the sharded gradient of that objective, plugged into the shared train step
run.py           the distillation recipe: what the shared loop needs (model, data, step, record)
"""
