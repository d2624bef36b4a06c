"""A run's register_as moves an alias: it says from which version to which, and warns when the new model is worse."""

from __future__ import annotations

import mlflow
import mlflow.pyfunc

from train import contract
from train.tracking.runs import register


class _Constant(mlflow.pyfunc.PythonModel):  # the smallest real model the registry takes: no TensorFlow
    def predict(self, context, model_input):
        return model_input


def _logged_model(best: float) -> str:
    with mlflow.start_run() as run:
        mlflow.log_metric(contract.BEST_VAL_ACCURACY, best)
        info = mlflow.pyfunc.log_model(name=contract.MODEL_ARTIFACT, python_model=_Constant(), pip_requirements=[])
    assert run.info.run_id
    return info.model_uri


def test_register_says_what_moved_and_warns_on_a_worse_model(tracking_uri, capsys):
    mlflow.set_experiment("aliases")  # this store's own: another module's fixture may have made another one active
    winner, worse, better = _logged_model(0.889), _logged_model(0.875), _logged_model(0.9)
    assert register(winner, "wildlife", "finetune") == 1
    assert "registered wildlife version 1 as wildlife@finetune" in capsys.readouterr().out
    assert register(worse, "wildlife", "finetune") == 2
    said = capsys.readouterr().out
    assert ("warning: wildlife@finetune moved from version 1 (best val_accuracy 0.889) to version 2 (0.875): a worse model; "
            "move it back with") in said
    assert "set_registered_model_alias('wildlife', 'finetune', 1)" in said
    assert register(better, "wildlife", "finetune") == 3
    said = capsys.readouterr().out
    assert "wildlife@finetune moved from version 2 (best val_accuracy 0.875) to version 3 (0.900)" in said and "warning" not in said
    assert str(mlflow.MlflowClient().get_model_version_by_alias("wildlife", "finetune").version) == "3"
