"""A queue of past teacher embeddings, extra negatives for the InfoNCE term (`distill.queue_steps`).

MoCo keeps its queue as training state because its key encoder changes every step. The
distillation teacher is frozen and its embeddings are cached, so the queue at step n (the
teacher embeddings of global batches n−1, …, n−K) is a function of the data order alone:
the data hands it over with each batch. A resumed run rebuilds exactly the queue the
interrupted one had, with nothing added to the checkpoint and nothing to keep in sync across
hosts; every host holds its own slice of each past batch, as it does of the current one.

Near an epoch boundary a past batch can hold an example of the current one: its teacher row is
then some anchor's positive, not a negative, and its slot is marked invalid for every anchor
(the other anchors lose one negative of K·B; none is taught to push its own target away).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from distilface_jax.distill.step import TEACHER_EMBEDDING, TEACHER_QUEUE, TEACHER_QUEUE_VALID
from distilface_jax.training import data


@dataclasses.dataclass(frozen=True)
class QueuedTeacherData(data.TrainData):
    """TrainData whose batches also carry the teacher embeddings of the `queue_steps` previous
    global batches (this host's rows of each), and which of them exist yet."""

    queue_steps: int = 0

    @classmethod
    def wrap(cls, train_data: data.TrainData, queue_steps: int) -> QueuedTeacherData:
        fields = {field.name: getattr(train_data, field.name) for field in dataclasses.fields(train_data)}
        return cls(**fields, queue_steps=queue_steps)

    def batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
        """The batch of `step` plus TEACHER_QUEUE [K·b, D] (batch step−1 first) and
        TEACHER_QUEUE_VALID [K·b] (False for the slots of steps before 0 and for examples that are
        also in the current global batch)."""
        batch = super().batch(step, process_index, process_count)
        table = self.arrays[TEACHER_EMBEDDING]  # [N, D]
        rows_per_host = self.global_batch_size // process_count
        current = data.global_batch_indices(self.num_examples, self.global_batch_size, self.seed, step)  # [B]
        queue, valid = [], []
        for past in range(step - 1, step - 1 - self.queue_steps, -1):
            if past < 0:
                queue.append(np.zeros((rows_per_host, table.shape[1]), table.dtype))
                valid.append(np.zeros((rows_per_host,), np.bool_))
                continue
            mine = data.host_indices(
                self.num_examples, past, self.global_batch_size, self.seed, process_index, process_count
            )
            queue.append(table[mine])
            valid.append(~np.isin(mine, current))
        batch[TEACHER_QUEUE] = np.concatenate(queue)
        batch[TEACHER_QUEUE_VALID] = np.concatenate(valid)
        return batch
