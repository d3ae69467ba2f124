"""Models-from-code entry points: MLflow copies one of these files into the logged model and
runs it at load time, so loading never unpickles Python objects. The `nice` package they
import is logged with the model too (`code/nice`, see nice.tracking), so they load where the
project itself is not installed."""
