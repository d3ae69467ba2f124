from kfp import dsl
from kfp.dsl import graph_component

from components import (compress_archive, evaluate, finalize_tracking, ingest, source_fingerprint, train_classifier,
                        train_mask_generator)
from pipeline.cluster import on_gpu, resilient
from pipeline.secrets import with_secrets
from pipeline.settings import DEFAULT, PipelineSettings


def build(settings: PipelineSettings = DEFAULT) -> graph_component.GraphComponent:
    """The pipeline with `settings` (retries, timeouts, GPU scheduling) baked into its spec."""

    @dsl.pipeline(name="train-and-compress",
                  description="Ingest a dataset, train the classifier and the NICE mask generator, compress "
                              "an archive with them, evaluate, and promote the models to champion when the gates "
                              "pass.")
    def train_and_compress(dataset_source: str = "mnist", archive_source: str = "s3://nice-demo/archive/",
                           archive_destination: str = "s3://nice-demo/compressed/", config: dict = {},  # noqa: B006
                           limit: int = 0, size: int = 64, shard_size: int = 1000, eval_sample: int = 400,
                           benchmark_images: int = 400, explain_images: int = 200,
                           compress_workers: int = 1) -> None:
        run_id, name = dsl.PIPELINE_JOB_ID_PLACEHOLDER, dsl.PIPELINE_JOB_NAME_PLACEHOLDER
        step = lambda task, s3=True, mlflow=True: resilient(with_secrets(task, s3=s3, mlflow=mlflow),  # noqa: E731
                                                            settings, task.name)
        done = step(finalize_tracking(kfp_run_id=run_id, pipeline_name=name), s3=False)
        done.set_caching_options(False)
        with dsl.ExitHandler(done, name="tracked-run"):
            # Always runs (it reads the live source's listing); ingest is cached by its result,
            # so a changed folder or prefix is ingested again and a builtin name is not.
            seen = step(source_fingerprint(source=dataset_source).set_caching_options(False), mlflow=False)
            data = step(ingest(source=dataset_source, limit=limit, size=size, source_fingerprint=seen.output,
                               kfp_run_id=run_id, pipeline_name=name))
            clf = step(train_classifier(dataset=data.outputs["dataset"], config=config, kfp_run_id=run_id,
                                        pipeline_name=name), s3=False)
            gen = train_mask_generator(dataset=data.outputs["dataset"], classifier=clf.outputs["model"],
                                       config=config, kfp_run_id=run_id, pipeline_name=name)
            on_gpu(gen, settings).set_memory_request("8G").set_cpu_request("4")
            step(gen, s3=False)
            comp = step(compress_archive(source=archive_source, destination=archive_destination,
                                         model=gen.outputs["model"], config=config, shard_size=shard_size,
                                         kfp_run_id=run_id, pipeline_name=name, workers=compress_workers))
            comp.set_caching_options(False)  # reads the live archive
            ev = step(evaluate(savings=comp.outputs["savings"], model=gen.outputs["model"],
                               classifier=clf.outputs["model"], dataset=data.outputs["dataset"],
                               source=archive_source, config=config, sample=eval_sample,
                               benchmark_images=benchmark_images, explain_images=explain_images,
                               kfp_run_id=run_id, pipeline_name=name))
            ev.set_caching_options(False)  # moves registry aliases

    return train_and_compress


train_and_compress = build()
