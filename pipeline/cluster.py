"""Pod-level settings applied to pipeline tasks: retry with back-off and a timeout for every
step, GPU scheduling for the training step. kfp.local ignores all of them; the compiled YAML
carries them (tests/test_pipeline_compile.py)."""

from __future__ import annotations

from typing import TypeVar

from kfp import dsl, kubernetes

from pipeline.settings import PipelineSettings

Task = TypeVar("Task", bound=dsl.PipelineTask)


def resilient(task: Task, settings: PipelineSettings, step: str) -> Task:
    """Retry `task` with exponential back-off (a lost S3/MLflow connection, a pre-empted
    node) and bound each attempt by the step's timeout."""
    r = settings.retry
    task.set_retry(r.retries, backoff_duration=r.backoff, backoff_factor=r.factor,
                   backoff_max_duration=r.max_duration)
    kubernetes.set_timeout(task, settings.timeout(step))
    return task


def on_gpu(task: Task, settings: PipelineSettings) -> Task:
    """Request the accelerator and let the pod land on (only) GPU nodes."""
    gpu = settings.gpu
    task.set_accelerator_type(gpu.accelerator).set_accelerator_limit(gpu.count)
    for key, value in sorted(gpu.node_selector.items()):
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for t in gpu.tolerations:
        kubernetes.add_toleration(task, key=t.key, operator=t.operator, value=t.value, effect=t.effect)
    return task
