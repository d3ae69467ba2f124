from kfp import dsl

from components.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def finalize_tracking(status: dsl.PipelineTaskFinalStatus, kfp_run_id: str = "", pipeline_name: str = "") -> str:
    """Exit handler: close the pipeline's MLflow parent run as FINISHED or FAILED."""
    from nice.tracking import Tracker

    tracker = Tracker()
    state = "FINISHED" if status.state == "SUCCEEDED" else "FAILED"
    tracker.finish_parent(tracker.parent_run(kfp_run_id, pipeline_name), state)
    return state
